//! The process-wide reapers: the threads that wait for our children and hand
//! each exited task leader to the executor that started it.
//!
//! Owns: which pid belongs to which executor and attempt, the spawn tickets, and
//! the `wait*` calls. It must not interpret an exit (that is `finish`) nor spawn
//! anything but what `finish` hands over; every spawn of the process goes
//! through `begin_spawn`/`end_spawn` so a child that exits early is never
//! mistaken for an orphan.
//!
//! # Reaping
//!
//! The *general* reaper peeks with `waitid(P_ALL, WEXITED | WNOWAIT)` and only
//! then reaps that pid with `wait4(pid, .., &mut rusage)`, which gives the exit
//! status, the peak RSS and the cpu time of the task and its waited-for
//! descendants. Peeking first keeps the exited leader a zombie while we look it
//! up, kill its group and reap it, so its pid (and so its process-group id)
//! cannot be reused by a new task in between, and a child that exits before
//! `start` has recorded its pid simply waits as a zombie until the record
//! exists. Unknown pids (orphans re-parented to the subreaper) are reaped and
//! ignored.
//!
//! # One reaper per core (issue 15, `home_reaper`)
//!
//! On an agent of 2 to [`PINNED_REAPERS_MAX`] cores a task bound to cores is
//! finished by a reaper pinned to its first core (its *home*), woken by the
//! task's pidfd, which then starts the task's chained successor there
//! (`handover`). Why: this machine kind's scheduler packs wake-ups onto busy
//! vCPUs, so a single reaper woken by an exit on the freed core was queued
//! behind the task running on the other one, and the freed core idled (14-22%
//! idle in the spawn bench by `perf sched`, against xargs' 7%). A home reaper
//! runs at once: its core has just freed. The general reaper then blocks in
//! `waitid` only while it has children of its own (unbound tasks, helpers,
//! spawns under way for them; a pidfd that cannot be opened, as before Linux
//! 5.3, makes a task general); otherwise it sleeps and sweeps orphans every
//! [`ORPHAN_SWEEP`]. A zombie it peeks that a home reaper owns is left to it.
//!
//! Because they wait for any child, nothing else in the agent may run child
//! processes once an executor exists (the invariant in the executor's doc).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use scalable_common::protocol::AttemptId;

use super::Inner;

/// Up to this many cores the agent runs one home reaper pinned to each (see
/// the module doc); above it only the general reaper (a thread per core was
/// not measured on large nodes).
pub(super) const PINNED_REAPERS_MAX: usize = 8;
/// How often the general reaper, without children of its own, reaps orphans.
const ORPHAN_SWEEP: Duration = Duration::from_millis(100);

/// The process-wide reapers: `wait*` on any child is process-global, so there
/// is one set, shared by every executor.
pub(super) static REAPER: Reaper = Reaper {
    state: Mutex::new(ReapState {
        owners: BTreeMap::new(),
        general: 0,
        in_flight: BTreeSet::new(),
        in_flight_general: 0,
        next_ticket: 0,
        epoch: 0,
        waiting: 0,
        idle: false,
        thread_started: false,
        claimed: BTreeSet::new(),
        homes: BTreeMap::new(),
    }),
    cv: Condvar::new(),
    idle_cv: Condvar::new(),
};

pub(super) struct Reaper {
    state: Mutex<ReapState>,
    /// Waiters for a change of `owners`, `claimed` or `epoch`.
    cv: Condvar,
    /// The idle general reaper's own: woken only when it gets work (a general
    /// task), not by every spawn and exit of the home reapers' tasks (two
    /// wake-ups a task on the busy cores otherwise, issue 15).
    idle_cv: Condvar,
}

/// What [`Reaper::live`] returns: a snapshot of the registered tasks.
#[derive(Default)]
pub(super) struct Live {
    pub(super) leaders: BTreeSet<libc::pid_t>,
    pub(super) attempts: BTreeMap<AttemptId, Arc<Inner>>,
}

/// A registered leader: its executor and attempt, and the pidfd its home
/// reaper waits on (`None`: the general reaper's).
pub(super) struct Owner {
    pub(super) inner: Arc<Inner>,
    pub(super) attempt: AttemptId,
    pidfd: Option<RawFd>,
}

/// A spawn under way: its ticket and the home reaper that will own it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    id: u64,
    home: Option<usize>,
}

struct ReapState {
    /// Leader pid → whose it is.
    owners: BTreeMap<libc::pid_t, Owner>,
    /// Owners without a pidfd: the general reaper must block in `waitid`.
    general: usize,
    /// Tickets of the spawns under way, whose pid is not in `owners` yet.
    in_flight: BTreeSet<u64>,
    /// Of those, spawns the general reaper will own.
    in_flight_general: usize,
    next_ticket: u64,
    /// Bumped after every spawn, so a reaper that saw ECHILD knows to look again.
    epoch: u64,
    /// Threads sleeping on `cv`; spawns only notify when one does (saves a syscall).
    waiting: usize,
    /// The general reaper sleeps on `idle_cv` (no general children).
    idle: bool,
    thread_started: bool,
    /// Exited pids a reaper is finishing (another that peeked the same zombie
    /// leaves it alone).
    claimed: BTreeSet<libc::pid_t>,
    /// Core → its home reaper's epoll descriptor.
    homes: BTreeMap<usize, RawFd>,
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
            let cores = crate::cpuset::own_cpus().unwrap_or_default();
            if (2..=PINNED_REAPERS_MAX).contains(&cores.len()) {
                st.homes = super::home_reaper::start(self, &cores);
            }
            st.thread_started = true;
        }
        Ok(())
    }

    /// Before a spawn of a task whose first core is `core` (`None`: unbound,
    /// or a helper); the ticket goes to `end_spawn`.
    pub(super) fn begin_spawn(&self, core: Option<usize>) -> Ticket {
        let mut st = self.lock();
        let id = st.next_ticket;
        st.next_ticket += 1;
        st.in_flight.insert(id);
        let home = core.filter(|c| st.homes.contains_key(c));
        if home.is_none() {
            st.in_flight_general += 1;
            if st.idle {
                self.idle_cv.notify_one(); // the general reaper must block in waitid now
            }
        }
        Ticket { id, home }
    }

    /// After a spawn attempt: record the new leader (if any) with its home
    /// reaper (a pidfd in that reaper's epoll set) or the general one.
    pub(super) fn end_spawn(
        &self,
        ticket: Ticket,
        owner: Option<(libc::pid_t, Arc<Inner>, AttemptId)>,
    ) {
        let mut st = self.lock();
        st.in_flight.remove(&ticket.id);
        if ticket.home.is_none() {
            st.in_flight_general -= 1;
        }
        st.epoch = st.epoch.wrapping_add(1);
        if let Some((pid, inner, attempt)) = owner {
            // Under the lock, so the owner is recorded before its home reaper can
            // look: a child that exited already makes its pidfd ready at once.
            let epoll = ticket.home.and_then(|core| st.homes.get(&core).copied());
            let pidfd = epoll.and_then(|epoll| super::home_reaper::watch(epoll, pid));
            if pidfd.is_none() {
                st.general += 1; // no pidfd (before Linux 5.3): the general reaper's
                if st.idle {
                    self.idle_cv.notify_one();
                }
            }
            st.owners.insert(
                pid,
                Owner {
                    inner,
                    attempt,
                    pidfd,
                },
            );
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
        for (&pid, o) in &st.owners {
            live.leaders.insert(pid);
            live.attempts.insert(o.attempt, o.inner.clone());
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

    /// For a home reaper whose pidfd of `pid` is readable: takes its owner
    /// (claimed until [`Reaper::release`]); `None` if it is not a home-owned
    /// leader (any more).
    pub(super) fn claim_home(&self, pid: libc::pid_t) -> Option<Owner> {
        let mut st = self.lock();
        if st.owners.get(&pid).is_some_and(|o| o.pidfd.is_some()) {
            st.claimed.insert(pid);
            return st.owners.remove(&pid);
        }
        None
    }

    /// `pid` is reaped: nobody is finishing it any more.
    pub(super) fn release(&self, pid: libc::pid_t) {
        let mut st = self.lock();
        st.claimed.remove(&pid);
        if st.waiting > 0 {
            self.cv.notify_all();
        }
    }

    /// The general reaper: blocks in `waitid` while it has children of its
    /// own, else sleeps and sweeps orphans now and then.
    fn run(&self) {
        loop {
            let epoch = {
                let mut st = self.lock();
                while st.general == 0 && st.in_flight_general == 0 {
                    st.idle = true;
                    let (g, timeout) = self
                        .idle_cv
                        .wait_timeout(st, ORPHAN_SWEEP)
                        .unwrap_or_else(PoisonError::into_inner);
                    st = g;
                    st.idle = false;
                    if timeout.timed_out() {
                        drop(st);
                        self.sweep_orphans();
                        st = self.lock();
                    }
                }
                st.epoch
            };
            match peek_exited(libc::WEXITED | libc::WNOWAIT) {
                Ok(Some(pid)) => self.handle(pid),
                Ok(None) => {}
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

    /// Reaps exited orphans without waiting; stops at the first zombie that is
    /// somebody's (it cannot look past it; the next sweep will).
    fn sweep_orphans(&self) {
        while let Ok(Some(pid)) = peek_exited(libc::WEXITED | libc::WNOWAIT | libc::WNOHANG) {
            {
                let mut st = self.lock();
                if st.owners.contains_key(&pid)
                    || st.claimed.contains(&pid)
                    || !st.in_flight.is_empty()
                {
                    return;
                }
                st.claimed.insert(pid);
            }
            let _ = reap(pid);
            self.release(pid);
        }
    }

    /// The general reaper's handling of a zombie it peeked.
    fn handle(&self, pid: libc::pid_t) {
        let owner = {
            let mut st = self.lock();
            // Only a spawn that began before this point can have made `pid`; later
            // ones must not hold up an orphan (or everything behind it).
            let horizon = st.next_ticket;
            loop {
                let home_owned = st.owners.get(&pid).is_some_and(|o| o.pidfd.is_some());
                if home_owned || st.claimed.contains(&pid) {
                    // A home reaper finishes it: wait until it is reaped.
                    while st.owners.contains_key(&pid) || st.claimed.contains(&pid) {
                        st = self.wait_on(st);
                    }
                    return;
                }
                if let Some(o) = st.owners.remove(&pid) {
                    st.general -= 1;
                    st.claimed.insert(pid);
                    break Some(o);
                }
                if st.in_flight.range(..horizon).next().is_none() {
                    st.claimed.insert(pid);
                    break None;
                }
                // Possibly a child whose `start` has not recorded it yet: it stays
                // a zombie (WNOWAIT) until the record exists or its spawn ends.
                st = self.wait_on(st);
            }
        };
        match owner {
            Some(o) => o.inner.finish(o.attempt, pid),
            None => {
                // An orphan re-parented to us, or a failed spawn's child that its
                // spawner already reaped (then this finds nothing, which is fine).
                let _ = reap(pid);
            }
        }
        self.release(pid);
    }
}

/// `waitid(P_ALL, flags)`: the pid of an exited child (not reaped with
/// `WNOWAIT`); `None` with `WNOHANG` when none has exited.
fn peek_exited(flags: libc::c_int) -> io::Result<Option<libc::pid_t>> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded; si_pid is 0 if nothing exited (WNOHANG).
    let pid = unsafe { info.si_pid() };
    Ok((pid != 0).then_some(pid))
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
