//! The model's invariants, asserted (STYLE habit 7): run after every
//! `TestEnv` step and usable in debug builds.
//!
//! Read-only. Must not change any state.

use scalable_common::protocol::Counts;
use scalable_common::resources::Resources;

use super::model::{RunState, TaskState};
use super::{add_resources, Core};

impl Core {
    /// Asserts every invariant of the model. O(tasks): for tests and debug builds.
    pub fn sanity_check(&self) {
        for (id, run) in &self.runs {
            let mut sum = Counts::default();
            let mut total = 0;
            for j in &run.jobs {
                let job = &self.jobs[j];
                assert_eq!(job.run, *id);
                sum.add(&job.counts);
                total += job.count();
                let mut recount = Counts::default();
                for slot in &job.tasks {
                    *slot.state.count_in(&mut recount) += 1;
                }
                assert_eq!(recount, job.counts, "job {} counts drifted", job.def.name);
                let on_agents = self.attempts.values().filter(|a| a.job == *j).count();
                assert_eq!(on_agents as u32, job.in_flight, "job {j} in_flight");
                assert_eq!(
                    on_agents as u64,
                    job.counts.assigned + job.counts.running,
                    "job {j}: tasks on agents vs attempts"
                );
                if !job.released {
                    assert_eq!(
                        job.counts.ready + job.counts.assigned + job.counts.running,
                        0
                    );
                }
                if let Some(max) = job.def.max_running {
                    assert!(job.in_flight <= max, "job {j} above max_running");
                }
            }
            assert_eq!(
                sum, run.counts,
                "run {id} counts are not the sum of its jobs"
            );
            assert_eq!(total, run.total);
            if run.state != RunState::Running {
                assert_eq!(
                    run.counts.done(),
                    run.total,
                    "finished run {id} has live tasks"
                );
            }
        }
        for a in self.agents.values() {
            let mut committed = Resources::default();
            let mut unstarted = 0;
            for at in &a.attempts {
                let attempt = &self.attempts[at];
                assert_eq!(attempt.agent, a.id);
                add_resources(&mut committed, &attempt.resources);
                if !attempt.started {
                    unstarted += 1;
                }
                let slot = self.jobs[&attempt.job].tasks[attempt.index as usize];
                let want = if attempt.started {
                    TaskState::Running
                } else {
                    TaskState::Assigned
                };
                assert_eq!(slot.state, want, "attempt {at} vs task state");
            }
            assert_eq!(committed.cpus, a.committed.cpus, "agent {} committed", a.id);
            assert_eq!(committed.memory_bytes, a.committed.memory_bytes);
            assert_eq!(unstarted, a.unstarted, "agent {} unstarted", a.id);
        }
        let listed: usize = self.agents.values().map(|a| a.attempts.len()).sum();
        assert_eq!(listed, self.attempts.len(), "attempt without an agent");
    }
}
