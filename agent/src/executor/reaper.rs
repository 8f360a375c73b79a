//! The process-wide reaper: one thread that waits for *any* child and hands each
//! exited task leader to the executor that started it.
//!
//! Owns: which pid belongs to which executor and attempt, the spawn tickets, and
//! the `wait*` calls. It must not interpret an exit (that is `finish`) nor spawn
//! anything; every spawn of the process goes through `begin_spawn`/`end_spawn`
//! so a child that exits early is never mistaken for an orphan.
//!
//! # Reaping
//!
//! It first peeks with `waitid(P_ALL, WEXITED | WNOWAIT)` and only then reaps
//! that pid with `wait4(pid, .., &mut rusage)`, which gives the exit status, the
//! peak RSS and the cpu time of the task and its waited-for descendants. Peeking
//! first keeps the exited leader a zombie while we look it up, kill its group and
//! reap it, so its pid (and so its process-group id) cannot be reused by a new
//! task in between, and a child that exits before `start` has recorded its pid
//! simply waits as a zombie until the record exists. With no children at all the
//! reaper sleeps on a condvar until the next spawn (no busy loop). Unknown pids
//! (orphans re-parented to the subreaper) are reaped and ignored.
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
pub(super) static REAPER: Reaper = Reaper {
    state: Mutex::new(ReapState {
        owners: BTreeMap::new(),
        in_flight: BTreeSet::new(),
        next_ticket: 0,
        epoch: 0,
        waiting: false,
        thread_started: false,
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
    /// Leader pid → the executor and attempt it belongs to.
    owners: BTreeMap<libc::pid_t, (Arc<Inner>, AttemptId)>,
    /// Tickets of the spawns under way, whose pid is not in `owners` yet.
    in_flight: BTreeSet<u64>,
    next_ticket: u64,
    /// Bumped after every spawn, so a reaper that saw ECHILD knows to look again.
    epoch: u64,
    /// The reaper sleeps on `cv`; spawns only notify when it does (saves a syscall).
    waiting: bool,
    thread_started: bool,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, ReapState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ensure_thread(&'static self) -> io::Result<()> {
        let mut st = self.lock();
        if !st.thread_started {
            std::thread::Builder::new()
                .name("exec-reaper".into())
                .spawn(move || self.run())?;
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
        owner: Option<(libc::pid_t, Arc<Inner>, AttemptId)>,
    ) {
        let mut st = self.lock();
        st.in_flight.remove(&ticket);
        st.epoch = st.epoch.wrapping_add(1);
        if let Some((pid, inner, attempt)) = owner {
            st.owners.insert(pid, (inner, attempt));
        }
        if st.waiting {
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
        for (&pid, (inner, attempt)) in &st.owners {
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
        st.waiting = true;
        let mut st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.waiting = false;
        st
    }

    fn run(&self) {
        loop {
            let epoch = self.lock().epoch;
            match peek_exited() {
                Ok(pid) => self.handle(pid),
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

    fn handle(&self, pid: libc::pid_t) {
        let owner = {
            let mut st = self.lock();
            // Only a spawn that began before this point can have made `pid`; later
            // ones must not hold up an orphan (or everything behind it).
            let horizon = st.next_ticket;
            loop {
                if let Some(o) = st.owners.remove(&pid) {
                    break Some(o);
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
                let _ = reap(pid);
            }
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
