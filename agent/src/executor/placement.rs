//! Where a task runs on this agent: its cores and GPUs, as the session's
//! free-lists handed them out.
//!
//! Owns: the [`Placement`] type. It must not choose cores or GPUs (the session's
//! `CpuPool` and `GpuPool` do) nor bind anything (the child binds itself, see
//! `launch`).

/// Where a task runs on this agent: its cores and GPUs (the session's free-lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Cores to bind the task to; `None`: not bound.
    pub cpus: Option<Vec<usize>>,
    /// The task's `CUDA_VISIBLE_DEVICES` ids; `None`: leave the variable alone
    /// (an agent without GPUs), `Some([])`: hide every GPU.
    pub gpus: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::super::test_env::{assignment, env, two_thousand_true};
    use super::Placement;

    #[test]
    fn placement_binds_cores_and_sets_gpus() {
        let own = crate::cpuset::own_cpus().expect("mask");
        let core = *own.last().expect("a core");
        let mut e = env();
        let a = assignment(
            1,
            &[
                "sh",
                "-c",
                "echo $SCALABLE_CPU_LIST $CUDA_VISIBLE_DEVICES; grep Cpus_allowed_list /proc/$$/status",
            ],
        );
        e.exec.start_placed(
            &a,
            &Placement {
                cpus: Some(vec![core]),
                gpus: Some(vec!["1".into(), "3".into()]),
            },
        );
        let (_, r) = e.wait(1);
        let out = String::from_utf8_lossy(&r.stdout_tail).into_owned();
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some(format!("{core} 1,3").as_str()), "{out}");
        // The shell itself, and so everything it forks, was bound from birth.
        let allowed = lines.next().unwrap_or("");
        assert!(allowed.ends_with(&format!("\t{core}")), "{out}");
        // A GPU agent hides every device from a task that asked for none.
        let a = assignment(2, &["sh", "-c", "echo \"[${CUDA_VISIBLE_DEVICES-unset}]\""]);
        e.exec.start_placed(
            &a,
            &Placement {
                cpus: None,
                gpus: Some(vec![]),
            },
        );
        let (_, r) = e.wait(2);
        assert_eq!(r.stdout_tail, b"[]\n");
    }

    /// The child binds itself: the spawning thread keeps its own mask (it used to
    /// be narrowed around each spawn and then waited behind the task for its core).
    #[test]
    fn a_bound_spawn_leaves_the_spawning_thread_unbound() {
        let own = crate::cpuset::own_cpus().expect("mask");
        let mut e = env();
        let a = assignment(1, &["sh", "-c", "grep Cpus_allowed_list /proc/$$/status"]);
        let place = Placement {
            cpus: Some(vec![own[0]]),
            gpus: None,
        };
        e.exec.start_placed(&a, &place);
        assert_eq!(
            crate::cpuset::own_cpus().expect("mask"),
            own,
            "the thread's mask"
        );
        let (_, r) = e.wait(1);
        let out = String::from_utf8_lossy(&r.stdout_tail).into_owned();
        assert!(out.trim_end().ends_with(&format!("\t{}", own[0])), "{out}");
    }

    /// The agent's own path on a multi-core box: every task bound to a core.
    #[test]
    fn two_thousand_true_bound_to_cores() {
        let own = crate::cpuset::own_cpus().expect("mask");
        two_thousand_true(", bound to cores", |n| Placement {
            cpus: Some(vec![own[n as usize % own.len()]]),
            gpus: None,
        });
    }
}
