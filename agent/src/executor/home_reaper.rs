//! Home reapers: one thread pinned to each core of the agent (2 to
//! `PINNED_REAPERS_MAX` cores), each finishing the tasks bound to its core,
//! woken by their pidfds (see `reaper`'s module doc for why).
//!
//! Owns: the home reapers' threads and epoll sets, and the pidfds in them. It
//! must not keep any state of its own about tasks: who owns a pid is the
//! `reaper`'s, and finishing one is `finish`'s (which also starts its chained
//! successor, on this thread and so on this core).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use super::reaper::Reaper;

/// Events taken from the epoll set per wake-up.
const EVENTS_PER_WAIT: usize = 16;

/// Starts a home reaper for each of `cores`; their epoll descriptors by core
/// (fewer, or none, if a set or a thread cannot be made: the general reaper
/// then owns those cores' tasks).
pub(super) fn start(reaper: &'static Reaper, cores: &[usize]) -> BTreeMap<usize, RawFd> {
    let mut homes = BTreeMap::new();
    for &core in cores {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            tracing::warn!(
                "no epoll set for core {core}'s reaper: {}",
                std::io::Error::last_os_error()
            );
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("exec-reaper-{core}"))
            .spawn(move || {
                if let Err(e) = crate::cpuset::bind(0, &[core]) {
                    tracing::warn!("cannot pin core {core}'s reaper: {e}");
                }
                run(reaper, epoll)
            });
        match spawned {
            Ok(_) => {
                homes.insert(core, epoll);
            }
            Err(e) => {
                tracing::warn!("no reaper thread for core {core}: {e}");
                // SAFETY: the descriptor made above, used by nobody.
                unsafe { libc::close(epoll) };
            }
        }
    }
    homes
}

/// Opens `pid`'s pidfd and adds it to the home reaper's set `epoll`; the
/// pidfd, or `None` if either fails (before Linux 5.3 there is no
/// `pidfd_open`).
pub(super) fn watch(epoll: RawFd, pid: libc::pid_t) -> Option<RawFd> {
    // SAFETY: a plain system call; returns a descriptor (close-on-exec) or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        return None;
    }
    let mut event = libc::epoll_event {
        // One-shot: reported once, even if a clone of the descriptor table
        // (a child between clone and exec) keeps the file alive after our close.
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        // Both numbers ride in the event: the pid to finish, the fd to close.
        u64: (u64::from(pidfd as u32) << 32) | u64::from(pid as u32),
    };
    // SAFETY: valid descriptors and a valid event.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, pidfd, &mut event) } != 0 {
        // SAFETY: the pidfd opened above.
        unsafe { libc::close(pidfd) };
        return None;
    }
    Some(pidfd)
}

/// A home reaper: finishes each task whose pidfd became readable (it exited),
/// then takes the pidfd out of the set and closes it.
fn run(reaper: &'static Reaper, epoll: RawFd) {
    // SAFETY: epoll_event is plain data; zeroed is valid.
    let mut events: [libc::epoll_event; EVENTS_PER_WAIT] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `events` is valid for EVENTS_PER_WAIT entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS_PER_WAIT as i32, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                tracing::error!("a home reaper's epoll_wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            continue;
        }
        for event in &events[..n as usize] {
            let data = event.u64;
            let pid = (data & 0xffff_ffff) as u32 as libc::pid_t;
            let pidfd = (data >> 32) as u32 as RawFd;
            if let Some(owner) = reaper.claim_home(pid) {
                owner.inner.finish(owner.attempt, pid);
                reaper.release(pid);
            }
            // Out of the set first: epoll watches the file, not the number, and
            // a child between clone and exec may hold the file a moment longer.
            // SAFETY: the pidfd `watch` opened for this pid, closed only here
            // (one-shot: its event comes once).
            unsafe {
                libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, pidfd, std::ptr::null_mut());
                libc::close(pidfd);
            }
        }
    }
}
