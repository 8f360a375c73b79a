//! The executor's unit-test harness: a real [`Executor`] on a temp dir, an
//! assignment builder, and waiting for events with a bound.
//!
//! Owns only test helpers shared by the executor's test modules; it must not hold
//! tests itself (each test lives beside the code it tests).

use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, Started};
use scalable_common::resources::Resources;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{ExecConfig, ExecEvent, Executor, Placement};

/// Generous bound for one short test task on a loaded 2-core machine.
const EVENT_WAIT_MAX: Duration = Duration::from_secs(30);

pub(super) struct Env {
    pub(super) exec: Executor,
    pub(super) rx: UnboundedReceiver<ExecEvent>,
    pub(super) dir: tempfile::TempDir,
}

pub(super) fn env_with(tweak: impl FnOnce(&mut ExecConfig)) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ExecConfig::new(dir.path());
    cfg.kill_grace = Duration::from_millis(200);
    tweak(&mut cfg);
    let (tx, rx) = unbounded_channel();
    let exec = Executor::new(cfg, tx).expect("executor");
    Env { exec, rx, dir }
}

pub(super) fn env() -> Env {
    env_with(|_| {})
}

pub(super) fn assignment(attempt: AttemptId, argv: &[&str]) -> Assignment {
    Assignment {
        attempt,
        task: 100 + attempt,
        run: 7,
        attempt_number: 1,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: String::new(),
        resources: Resources::cpus(1),
        walltime_ms: None,
        outputs: Vec::new(),
        container: None,
        inputs: Vec::new(),
    }
}

impl Env {
    pub(super) fn recv(&mut self) -> ExecEvent {
        let until = Instant::now() + EVENT_WAIT_MAX;
        loop {
            match self.rx.try_recv() {
                Ok(ev) => return ev,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("no event within {EVENT_WAIT_MAX:?}: {e}"),
            }
        }
    }

    /// Runs one assignment to its end; checks Started comes first (if at all).
    pub(super) fn run(&mut self, a: &Assignment) -> (Option<Started>, AttemptResult) {
        self.exec.start(a);
        self.wait(a.attempt)
    }

    pub(super) fn wait(&mut self, attempt: AttemptId) -> (Option<Started>, AttemptResult) {
        let mut started = None;
        loop {
            match self.recv() {
                ExecEvent::Started(s) => {
                    assert_eq!(s.attempt, attempt);
                    assert!(started.is_none(), "two Started events");
                    started = Some(s);
                }
                ExecEvent::Finished(r) => {
                    assert_eq!(r.attempt, attempt);
                    return (started, r);
                }
                ExecEvent::Handover { .. } => panic!("nothing was chained"),
            }
        }
    }
}

/// 2,000 `/bin/true`, two at a time; each start gets `place(n)`.
pub(super) fn two_thousand_true(what: &str, place: impl Fn(u64) -> Placement) {
    const TASKS: u64 = 2000;
    const PARALLEL: u64 = 2;
    let mut e = env();
    let t0 = Instant::now();
    let mut next = 0;
    while next < PARALLEL {
        e.exec
            .start_placed(&assignment(next, &["/bin/true"]), &place(next));
        next += 1;
    }
    let mut done = 0;
    while done < TASKS {
        match e.rx.blocking_recv() {
            Some(ExecEvent::Finished(r)) => {
                assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
                done += 1;
                if next < TASKS {
                    e.exec
                        .start_placed(&assignment(next, &["/bin/true"]), &place(next));
                    next += 1;
                }
            }
            Some(ExecEvent::Started(_)) => {}
            Some(ExecEvent::Handover { .. }) => panic!("nothing was chained"),
            None => panic!("event channel closed"),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "spawn rate{what}: {TASKS} x /bin/true, {PARALLEL} at a time: {:.0}/s ({secs:.2} s)",
        TASKS as f64 / secs
    );
    assert_eq!(e.exec.running(), 0);
}
