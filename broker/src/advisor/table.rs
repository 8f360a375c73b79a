//! The trained advisors dispatch asks when it sizes `auto` tasks: one per
//! task type, trained on a thread of its own at a low priority, refreshed in
//! the background once enough new attempts reached the store (the old one
//! answers meanwhile).
//!
//! A caller never trains: it gets the advisor there is, or waits for the
//! first training of a task type at most the time it names, and then gets
//! the reason there is none (its tasks take their fallback). Must not be
//! called on the core's task; it never writes the store.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::learned::TaskAdvisor;
use super::service::{AdvisorService, DEFAULT_MODEL};
use super::{history, sample::Sample};

/// The store's newest attempt is looked up at most this often.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Retrain once this many attempts were made since the last training ...
const REFRESH_NEW_MIN: u64 = 20;
/// ... and at least this share of the samples it was trained on.
const REFRESH_GROWTH: f64 = 0.10;
/// Niceness of training threads: dispatch and the agents' I/O come first.
const TRAIN_NICE: libc::c_int = 10;

struct Entry {
    /// The advisor, or why there is none (no telemetry yet, training).
    advisor: Result<Arc<TaskAdvisor>, String>,
    /// The store's newest attempt id when its samples were read.
    at_attempt: u64,
    samples: usize,
    training: bool,
    /// A training has finished at least once.
    ready: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// When the store's newest attempt was last looked up, and its id.
    checked: Option<(Instant, u64)>,
}

pub struct AdvisorTable {
    service: Arc<AdvisorService>,
    state: Mutex<State>,
    trained: Condvar,
}

impl AdvisorTable {
    pub fn new(service: Arc<AdvisorService>) -> Arc<AdvisorTable> {
        Arc::new(AdvisorTable {
            service,
            state: Mutex::new(State::default()),
            trained: Condvar::new(),
        })
    }

    /// The advisor of `task` now; blocking at most `wait`, and only until
    /// the first training of `task` ends.
    pub fn get(self: &Arc<Self>, task: &str, wait: Duration) -> Result<Arc<TaskAdvisor>, String> {
        let newest = self.newest_attempt();
        let mut st = self.lock();
        let start = match st.entries.get_mut(task) {
            None => {
                st.entries.insert(
                    task.to_string(),
                    Entry {
                        advisor: Err("the advisor is training".into()),
                        at_attempt: 0,
                        samples: 0,
                        training: true,
                        ready: false,
                    },
                );
                true
            }
            Some(e) if !e.training && stale(e, newest) => {
                e.training = true;
                true
            }
            Some(_) => false,
        };
        if start {
            self.spawn_training(task.to_string());
        }
        let deadline = Instant::now() + wait;
        loop {
            let e = &st.entries[task];
            if e.ready {
                return e.advisor.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the advisor's first training is still going".into());
            }
            st = self
                .trained
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn spawn_training(self: &Arc<Self>, task: String) {
        let this = self.clone();
        let name = task.clone();
        let spawned = std::thread::Builder::new()
            .name("advisor-train".into())
            .spawn(move || {
                lower_priority();
                let at = this.newest_attempt_now();
                let samples = this.service.samples();
                let n = samples.as_ref().map_or(0, |s| count(s, &task));
                let advisor = samples
                    .and_then(|s| this.service.train(&task, DEFAULT_MODEL, &s))
                    .map(Arc::new);
                let mut st = this.lock();
                if let Some(e) = st.entries.get_mut(&task) {
                    // A failed refresh keeps the advisor it had.
                    if advisor.is_ok() || !e.ready || e.advisor.is_err() {
                        e.advisor = advisor;
                    }
                    (e.at_attempt, e.samples, e.training, e.ready) = (at, n, false, true);
                }
                this.trained.notify_all();
            });
        if let Err(e) = spawned {
            let mut st = self.lock();
            if let Some(entry) = st.entries.get_mut(&name) {
                entry.training = false;
                entry.ready = true;
                entry.advisor = Err(format!("cannot start the advisor's training: {e}"));
            }
        }
    }

    /// The store's newest attempt id, looked up at most every `CHECK_EVERY`.
    fn newest_attempt(&self) -> u64 {
        if let Some((at, id)) = self.lock().checked {
            if at.elapsed() < CHECK_EVERY {
                return id;
            }
        }
        let id = self.newest_attempt_now();
        self.lock().checked = Some((Instant::now(), id));
        id
    }

    fn newest_attempt_now(&self) -> u64 {
        let db = self.service.db();
        if !db.exists() {
            return 0;
        }
        history::open(db)
            .and_then(|c| {
                c.query_row("SELECT COALESCE(MAX(id), 0) FROM attempts", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(|e| e.to_string())
            })
            .map_or(0, |id| id.max(0) as u64)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves only a cache behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Enough attempts were made since the entry's training to train again.
fn stale(e: &Entry, newest: u64) -> bool {
    let new = newest.saturating_sub(e.at_attempt);
    new >= REFRESH_NEW_MIN && new as f64 >= e.samples as f64 * REFRESH_GROWTH
}

fn count(samples: &[Sample], task: &str) -> usize {
    samples.iter().filter(|s| s.task_type == task).count()
}

/// Runs this thread at [`TRAIN_NICE`]; on failure it keeps the broker's.
fn lower_priority() {
    // SAFETY: neither call takes a pointer; on Linux a thread id names the
    // calling thread alone (the raw syscall: glibc 2.17 has no `gettid`).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, TRAIN_NICE);
    }
}
