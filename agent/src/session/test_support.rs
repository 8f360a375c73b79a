//! Helpers shared by the session's tests: an assignment builder and running
//! what `Work` holds to the end as the loop does. No tests live here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId};
use scalable_common::resources::Resources;
use tokio::sync::mpsc;

use super::work::{apply_exec_event, Work};
use crate::executor::{ExecEvent, Executor};

pub(super) fn assignment(attempt: AttemptId, resources: Resources, argv: &[&str]) -> Assignment {
    Assignment {
        attempt,
        task: attempt,
        run: 1,
        attempt_number: 1,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: String::new(),
        resources,
        walltime_ms: None,
        outputs: Vec::new(),
        container: None,
        inputs: Vec::new(),
    }
}

/// Runs everything queued in `work` to the end, as the session loop does;
/// returns each attempt's stdout.
pub(super) fn drain(
    work: &mut Work,
    exec: &Executor,
    rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
) -> HashMap<AttemptId, String> {
    let mut out = HashMap::new();
    work.start_what_fits(exec, false);
    let until = Instant::now() + Duration::from_secs(30);
    while !work.idle() {
        assert!(Instant::now() < until, "tasks did not finish");
        match rx.try_recv() {
            Ok(ev) => {
                if let ExecEvent::Finished(r) = &ev {
                    assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
                    out.insert(r.attempt, String::from_utf8_lossy(&r.stdout_tail).into());
                }
                apply_exec_event(work, ev);
                work.start_what_fits(exec, false);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    out
}
