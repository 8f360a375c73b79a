//! `demand`: per tag, what is ready and what blocks it: counts and sizes of
//! ready tasks, the reasons they are not on an agent (the same per-job
//! evaluation as `why`), how many would fit on a fresh agent of each pilot
//! shape the caller names, what runs, and what connected agents offer and
//! have committed. The scaler, `why` and `diagnose` read it.
//!
//! Read-only. Must not change any state; it knows no pilots (the caller
//! passes their shapes) and must not decide to start or stop anything.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use scalable_common::explain::{
    AgentShape, Demand, Reason, ReasonCount, ShapeFit, SizeCount, TagDemand,
};
use scalable_common::protocol::{JobId, RunId};
use scalable_common::resources::Resources;

use super::model::{Job, Offer, TaskState};
use super::Core;

/// Ready tasks of one job in their retry backoff: how many, the soonest end.
#[derive(Debug, Clone, Copy)]
pub(super) struct InBackoff {
    tasks: u64,
    remaining_ms: u64,
}

impl Core {
    /// The demand of every tag with live tasks or serving agents, untagged first.
    /// `shapes`: fresh agents the caller could start (see [`TagDemand::fits`]).
    pub fn demand(&self, now_ms: u64, shapes: &[AgentShape]) -> Demand {
        let mut tags: BTreeMap<Option<String>, TagDemand> = BTreeMap::new();
        let serving = || self.agents.values().filter(|a| a.connected && !a.draining);
        for a in serving() {
            if a.tags.is_empty() {
                tags.entry(None).or_default();
            }
            for t in &a.tags {
                tags.entry(Some(t.clone())).or_default();
            }
        }
        let backoff = self.backoff_by_job(now_ms);
        for job in self.jobs.values() {
            let c = &job.counts;
            if c.waiting + c.ready + c.assigned + c.running == 0 {
                continue;
            }
            let d = tags.entry(job.tag().map(String::from)).or_default();
            d.waiting += c.waiting;
            d.ready += c.ready;
            d.assigned += c.assigned;
            d.running += c.running;
            if c.ready > 0 {
                self.add_ready(d, job, backoff.get(&job.id).copied(), shapes, now_ms);
            }
        }
        for (tag, d) in tags.iter_mut() {
            d.tag = tag.clone();
            // One entry per shape, also where nothing is ready.
            for shape in d.fits.len()..shapes.len() {
                d.fits.push(ShapeFit { shape, tasks: 0 });
            }
            for a in serving().filter(|a| a.serves(tag.as_deref())) {
                d.agents += 1;
                d.offered.give(&a.capacity);
                d.committed.give(&a.committed);
            }
            d.sizes
                .sort_by_key(|s| std::cmp::Reverse(size_key(&s.resources)));
        }
        Demand {
            tags: tags.into_values().collect(),
        }
    }

    /// The job's ready tasks: their sizes, why they wait, and the shapes
    /// that could run them.
    fn add_ready(
        &self,
        d: &mut TagDemand,
        job: &Job,
        backoff: Option<InBackoff>,
        shapes: &[AgentShape],
        now_ms: u64,
    ) {
        let ready = job.counts.ready;
        // Tasks whose request was raised (few): the rest ask for the job's.
        let raised: Vec<&Resources> = job
            .overrides
            .iter()
            .filter(|(i, _)| job.tasks[**i as usize].state == TaskState::Ready)
            .map(|(_, r)| r)
            .collect();
        let mut groups: Vec<(&Resources, u64)> =
            vec![(&job.resources, ready - raised.len() as u64)];
        groups.extend(raised.iter().map(|r| (*r, 1)));
        for &(r, n) in groups.iter().filter(|g| g.1 > 0) {
            add_size(&mut d.sizes, r, n);
        }
        let in_backoff = backoff.map_or(0, |b| b.tasks);
        if let Some(b) = backoff {
            add_reason(
                &mut d.blocked,
                Reason::Backoff {
                    remaining_ms: b.remaining_ms,
                },
                b.tasks,
            );
        }
        if ready > in_backoff {
            add_reason(
                &mut d.blocked,
                self.job_reason(job, now_ms),
                ready - in_backoff,
            );
        }
        for (i, shape) in shapes.iter().enumerate() {
            let offer = Offer {
                tags: &shape.tags,
                capacity: &shape.resources,
                container_runtime: shape.container_runtime,
                lifetime_end_ms: shape.lifetime_ms.map(|l| now_ms + l),
            };
            let tasks: u64 = groups
                .iter()
                .filter(|(r, _)| offer.could_run(job, r, now_ms))
                .map(|(_, n)| n)
                .sum();
            match d.fits.iter_mut().find(|f| f.shape == i) {
                Some(f) => f.tasks += tasks,
                None => d.fits.push(ShapeFit { shape: i, tasks }),
            }
        }
    }

    /// The ready tasks of a run that are not on an agent, by reason (the
    /// same per-job evaluation as `why` and [`Core::demand`]); tasks in
    /// backoff under the soonest end. Empty when nothing is ready.
    /// `backoff`: the tasks in backoff per job, worked out once for all the
    /// runs of one `status` and only if one of them has ready tasks.
    pub(super) fn run_blocked(
        &self,
        run: RunId,
        now_ms: u64,
        backoff: &OnceCell<HashMap<JobId, InBackoff>>,
    ) -> Vec<ReasonCount> {
        let Some(r) = self.runs.get(&run) else {
            return Vec::new();
        };
        if r.counts.ready == 0 {
            return Vec::new();
        }
        let backoff = backoff.get_or_init(|| self.backoff_by_job(now_ms));
        let mut blocked = Vec::new();
        for job in r.jobs.iter().map(|j| &self.jobs[j]) {
            let ready = job.counts.ready;
            if ready == 0 {
                continue;
            }
            let in_backoff = backoff.get(&job.id).copied();
            if let Some(b) = in_backoff {
                let reason = Reason::Backoff {
                    remaining_ms: b.remaining_ms,
                };
                add_reason(&mut blocked, reason, b.tasks);
            }
            let rest = ready - in_backoff.map_or(0, |b| b.tasks);
            if rest > 0 {
                add_reason(&mut blocked, self.job_reason(job, now_ms), rest);
            }
        }
        blocked
    }

    /// Ready tasks waiting out a retry backoff, per job (as `why` sees them).
    fn backoff_by_job(&self, now_ms: u64) -> HashMap<JobId, InBackoff> {
        let mut by_job: HashMap<JobId, InBackoff> = HashMap::new();
        let mut seen: HashSet<(JobId, u64)> = HashSet::new();
        for std::cmp::Reverse((due, job, index)) in self.backoff.iter() {
            let ready = self.jobs[job].tasks[*index as usize].state == TaskState::Ready;
            if !ready || !seen.insert((*job, *index)) {
                continue;
            }
            let remaining_ms = due.saturating_sub(now_ms);
            let e = by_job.entry(*job).or_insert(InBackoff {
                tasks: 0,
                remaining_ms,
            });
            e.tasks += 1;
            e.remaining_ms = e.remaining_ms.min(remaining_ms);
        }
        by_job
    }
}

/// Largest first, as the scheduler offers them (gpus, cpus, memory).
fn size_key(r: &Resources) -> (u32, u32, u64) {
    (r.gpus, r.cpus, r.memory_bytes)
}

fn add_size(sizes: &mut Vec<SizeCount>, r: &Resources, n: u64) {
    match sizes.iter_mut().find(|s| &s.resources == r) {
        Some(s) => s.tasks += n,
        None => sizes.push(SizeCount {
            resources: r.clone(),
            tasks: n,
        }),
    }
}

/// Counts `n` tasks under `reason`; tasks in backoff share one entry with the
/// soonest end.
fn add_reason(blocked: &mut Vec<ReasonCount>, reason: Reason, n: u64) {
    if let Reason::Backoff { remaining_ms } = reason {
        if let Some(b) = blocked
            .iter_mut()
            .find(|b| matches!(b.reason, Reason::Backoff { .. }))
        {
            b.tasks += n;
            if let Reason::Backoff { remaining_ms: r } = &mut b.reason {
                *r = (*r).min(remaining_ms);
            }
            return;
        }
    }
    match blocked.iter_mut().find(|b| b.reason == reason) {
        Some(b) => b.tasks += n,
        None => blocked.push(ReasonCount { reason, tasks: n }),
    }
}
