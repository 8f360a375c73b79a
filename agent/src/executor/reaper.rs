//! The process-wide reapers: threads that wait for *any* child and hand each
//! exited task leader to the executor that started it.
//!
//! Owns: which pid belongs to which executor and attempt, the spawn tickets, and
//! the `wait*` calls. It must not interpret an exit (that is `finish`) nor spawn
//! anything but what `finish` hands over; every spawn of the process goes
//! through `begin_spawn`/`end_spawn` so a child that exits early is never
//! mistaken for an orphan.
//!
//! # Reaping
//!
//! A reaper first peeks with `waitid(P_ALL, WEXITED | WNOWAIT)` and only then
//! reaps that pid with `wait4(pid, .., &mut rusage)`, which gives the exit
//! status, the peak RSS and the cpu time of the task and its waited-for
//! descendants. Peeking first keeps the exited leader a zombie while we look it
//! up, kill its group and reap it, so its pid (and so its process-group id)
//! cannot be reused by a new task in between, and a child that exits before
//! `start` has recorded its pid simply waits as a zombie until the record
//! exists. With no children at all the reapers sleep on a condvar until the
//! next spawn (no busy loop). Unknown pids (orphans re-parented to the
//! subreaper) are reaped and ignored.
//!
//! # One reaper per core (issue 15)
//!
//! On an agent of 2 to [`PINNED_REAPERS_MAX`] cores there is one reaper pinned
//! to each core, and a task bound to cores is finished by the reaper of its
//! first core (its *home*), which then starts the task's chained successor
//! there (`handover`). Why: this machine kind's scheduler packs wake-ups onto
//! busy vCPUs, so a single reaper woken by an exit on the freed core was
//! queued behind the task running on the other one, and the freed core idled
//! (14-22% idle in the spawn bench by `perf sched`, against xargs' 7%). Every
//! reaper is woken by every exit (they all wait on `P_ALL`): one that peeks
//! another core's task leaves it to its home reaper for at most
//! `HOME_WAIT_MAX` (two reapers may each have peeked the other's), and a pid
//! being finished is `claimed` so nobody else touches it.
//!
//! Because it waits for any child, nothing else in the agent may run child
//! processes once an executor exists (the invariant in the executor's doc).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use scalable_common::protocol::AttemptId;

use super::Inner;

/// The process-wide reaper: `wait*` on any child is process-global, so there is
/// exactly one, shared by every executor.
/// Up to this many cores the agent runs one reaper pinned to each (see the
/// module doc); above it, one reaper: every exit wakes every reaper, which
/// costs more than it saves on a large node.
const PINNED_REAPERS_MAX: usize = 8;
/// How long a reaper leaves another core's task to that core's reaper.
const HOME_WAIT_MAX: Duration = Duration::from_millis(2);

pub(super) static REAPER: Reaper = Reaper {
    state: Mutex::new(ReapState {
        owners: BTreeMap::new(),
        in_flight: BTreeSet::new(),
        next_ticket: 0,
        epoch: 0,
        waiting: 0,
        thread_started: false,
        claimed: BTreeSet::new(),
        pinned: BTreeSet::new(),
    }),
    cv: Condvar::new(),
};

pub(super) struct Reaper {
    state: Mutex<ReapState>,
    cv: Condvar,
}

/// What [`Reaper::live`] returns: a snapshot of the registered tasks.
#[derive(Default)]
pub(super) struct Live {
    pub(super) leaders: BTreeSet<libc::pid_t>,
    pub(super) attempts: BTreeMap<AttemptId, Arc<Inner>>,
}

struct ReapState {
    /// Leader pid → the executor and attempt it belongs to, and the core
    /// whose reaper finishes it (its first core, when bound).
    owners: BTreeMap<libc::pid_t, (Arc<Inner>, AttemptId, Option<usize>)>,
    /// Tickets of the spawns under way, whose pid is not in `owners` yet.
    in_flight: BTreeSet<u64>,
    next_ticket: u64,
    /// Bumped after every spawn, so a reaper that saw ECHILD knows to look again.
    epoch: u64,
    /// Reapers sleeping on `cv`; spawns only notify when one does (saves a syscall).
    waiting: usize,
    thread_started: bool,
    /// Exited pids a reaper is finishing (another reaper that peeked the same
    /// zombie waits until it is gone).
    claimed: BTreeSet<libc::pid_t>,
    /// Cores with a reaper pinned to them.
    pinned: BTreeSet<usize>,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, ReapState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ensure_thread(&'static self) -> io::Result<()> {
        let mut st = self.lock();
        if !st.thread_started {
            let cores = crate::cpuset::own_cpus().unwrap_or_default();
            if (2..=PINNED_REAPERS_MAX).contains(&cores.len()) {
                for core in cores {
                    st.pinned.insert(core);
                    std::thread::Builder::new()
                        .name(format!("exec-reaper-{core}"))
                        .spawn(move || {
                            let _ = crate::cpuset::bind(0, &[core]);
                            self.run(Some(core))
                        })?;
                }
            } else {
                std::thread::Builder::new()
                    .name("exec-reaper".into())
                    .spawn(move || self.run(None))?;
            }
            st.thread_started = true;
        }
        Ok(())
    }

    /// Before a spawn; the ticket goes to `end_spawn`.
    pub(super) fn begin_spawn(&self) -> u64 {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.in_flight.insert(ticket);
        ticket
    }

    /// After a spawn attempt: record the new leader (if any) and wake the reaper.
    pub(super) fn end_spawn(
        &self,
        ticket: u64,
        owner: Option<(libc::pid_t, Arc<Inner>, AttemptId, Option<usize>)>,
    ) {
        let mut st = self.lock();
        st.in_flight.remove(&ticket);
        st.epoch = st.epoch.wrapping_add(1);
        if let Some((pid, inner, attempt, home)) = owner {
            st.owners.insert(pid, (inner, attempt, home));
        }
        if st.waiting > 0 {
            self.cv.notify_all();
        }
    }

    /// The registered leaders' pids, and each live attempt with its executor;
    /// `None` while a spawn is under way (its child may not be registered yet).
    /// For `escapees`, which must never take a leader for an escaped process.
    pub(super) fn live(&self) -> Option<Live> {
        let st = self.lock();
        if !st.in_flight.is_empty() {
            return None;
        }
        let mut live = Live::default();
        for (&pid, (inner, attempt, _)) in &st.owners {
            live.leaders.insert(pid);
            live.attempts.insert(*attempt, inner.clone());
        }
        Some(live)
    }

    /// The registered leaders' pids, even while a spawn is under way (a child
    /// not registered yet is missing then).
    pub(super) fn leaders(&self) -> BTreeSet<libc::pid_t> {
        self.lock().owners.keys().copied().collect()
    }

    fn wait_on<'a>(&self, st: MutexGuard<'a, ReapState>) -> MutexGuard<'a, ReapState> {
        let mut st = st;
        st.waiting += 1;
        let mut st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.waiting -= 1;
        st
    }

    /// `core`: the core this reaper is pinned to (one reaper per core), whose
    /// tasks it finishes; `None`: the only reaper.
    fn run(&self, core: Option<usize>) {
        loop {
            let epoch = self.lock().epoch;
            match peek_exited() {
                Ok(pid) => self.handle(pid, core),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    // No children: sleep until a spawn bumps the epoch. A spawn that
                    // finished after `epoch` was read has bumped it already.
                    let mut st = self.lock();
                    while st.epoch == epoch {
                        st = self.wait_on(st);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    // Not expected from waitid; back off instead of spinning.
                    tracing::error!("waitid failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn handle(&self, pid: libc::pid_t, core: Option<usize>) {
        let owner = {
            let mut st = self.lock();
            // Only a spawn that began before this point can have made `pid`; later
            // ones must not hold up an orphan (or everything behind it).
            let horizon = st.next_ticket;
            loop {
                if st.claimed.contains(&pid) {
                    // Another reaper finishes it: wait until it is reaped.
                    while st.claimed.contains(&pid) {
                        st = self.wait_on(st);
                    }
                    return;
                }
                let home = st.owners.get(&pid).map(|o| o.2);
                let mine = match (home, core) {
                    (Some(Some(h)), Some(c)) => h == c || !st.pinned.contains(&h),
                    _ => true,
                };
                if home.is_some() && !mine {
                    // Its core's reaper finishes it, there, where its
                    // successor starts: wait until it is gone.
                    // Bounded: two reapers may each have peeked the other's.
                    let until = std::time::Instant::now() + HOME_WAIT_MAX;
                    while st.owners.contains_key(&pid) || st.claimed.contains(&pid) {
                        let now = std::time::Instant::now();
                        if now >= until {
                            break;
                        }
                        st.waiting += 1;
                        st = self
                            .cv
                            .wait_timeout(st, until - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        st.waiting -= 1;
                    }
                    if !st.owners.contains_key(&pid) {
                        return;
                    }
                }
                if let Some((inner, attempt, _)) = st.owners.remove(&pid) {
                    st.claimed.insert(pid);
                    break Some((inner, attempt));
                }
                if st.in_flight.range(..horizon).next().is_none() {
                    break None;
                }
                // Possibly a child whose `start` has not recorded it yet: it stays
                // a zombie (WNOWAIT) until the record exists or its spawn ends.
                st = self.wait_on(st);
            }
        };
        match owner {
            Some((inner, attempt)) => inner.finish(attempt, pid),
            None => {
                // An orphan re-parented to us, or a failed spawn's child that libc
                // already reaped (then this finds nothing, which is fine).
                self.lock().claimed.insert(pid);
                let _ = reap(pid);
            }
        }
        let mut st = self.lock();
        st.claimed.remove(&pid);
        if st.waiting > 0 {
            self.cv.notify_all();
        }
    }
}

/// Waits for any child to exit without reaping it; returns its pid.
fn peek_exited() -> io::Result<libc::pid_t> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded for an exited child, so si_pid is the valid field.
    Ok(unsafe { info.si_pid() })
}

/// Reaps `pid` (an exited child); its wait status and resource usage.
pub(super) fn reap(pid: libc::pid_t) -> Option<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    let mut ru = zeroed_rusage();
    loop {
        // SAFETY: `status` and `ru` are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            return Some((status, ru));
        }
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

pub(super) fn zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
