//! Processes that left their task's process group (`setsid`, a double fork):
//! found, tied to their attempt, and killed once it has ended.
//!
//! Owns: the sweep over the agent's children, tying a process to its attempt
//! ([`attempt_of`]) and the `pidfd` signals. It must not kill a process
//! it cannot tie to an ended attempt, a registered task leader, or anything
//! while a spawn is under way; and it must not run per spawn.
//!
//! # How an escaped process is found
//!
//! A task's process group is killed when its leader exits, is stopped, times
//! out or is killed for memory (`finish`, `stop`, `watchdog`). A process that
//! made its own group or session is not in it, so it lives on. Its parent dies
//! sooner or later (with the group, at the latest), and because the agent is a
//! child subreaper it is then re-parented to the agent, not to init. So every
//! escaped process of an ended task ends up a child of the agent that is not a
//! task leader (`/proc/self/task/*/children`). Its environment still has the
//! `SCALABLE_ATTEMPT_ID` it inherited from its task (read from
//! `/proc/<pid>/environ`, the environment it was started with), which ties it
//! to its attempt. One whose attempt is no longer running is SIGKILLed with its
//! process group; one whose attempt still runs is left alone.
//!
//! While their task runs, escaped processes are also found by the watchdog's
//! memory sampling (`limits::sample_groups`: the parent chain leads to the
//! task's group, or to the agent and [`attempt_of`] to the task): their memory
//! counts for the task, and the groups they lead are given to the orphan guard
//! (and taken back once gone), so a SIGKILLed agent takes them along.
//!
//! A sweep runs at most every size check (100 ms) after a task ended and once
//! a second anyway, from the watchdog, and until quiet when the executor stops
//! everything ([`Executor::kill_all_now`], drop). Nothing happens per spawn:
//! tasks that do not daemonize cost one flag per end. A task whose memory is
//! limited by a cgroup (cgroup-v2 mode) has its escaped processes killed with
//! the cgroup at once (`limits::TaskCgroup::remove`).
//!
//! What it cannot catch: a process that cleared its environment (`env -i`) or
//! changed `SCALABLE_ATTEMPT_ID` before its `exec` cannot be tied to a task and
//! is left alone; an escaped process whose parent is still alive is not the
//! agent's child yet (it is found once that parent dies); between a process's
//! escape and the next sampling (a second) the orphan guard does not know it;
//! and the guard may hold a group id up to a second after the group is gone.
//!
//! [`Executor::kill_all_now`]: super::Executor::kill_all_now

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use scalable_common::protocol::AttemptId;

use super::reaper::REAPER;
use super::{Inner, State};
use crate::limits::{self, GroupSample};

/// The variable every task gets (SPEC §4) that ties a process to its attempt.
const ATTEMPT_ENV: &[u8] = b"SCALABLE_ATTEMPT_ID=";
/// Rounds of [`sweep_until_quiet`]: a kill re-parents the victim's children.
const QUIET_ROUNDS_MAX: u32 = 10;
/// Pause between those rounds, for the killed processes to exit.
const QUIET_PAUSE: Duration = Duration::from_millis(20);

/// [`limits::sample_groups`] for the running tasks `targets` (attempt, leader)
/// whose groups are `pgids`: a process re-parented to the agent is theirs by
/// [`attempt_of`], unless it is a registered leader (of another executor).
pub(super) fn sample_tasks(
    pgids: &[libc::pid_t],
    targets: &[(AttemptId, libc::pid_t)],
) -> Vec<GroupSample> {
    let agent = libc::pid_t::try_from(std::process::id()).unwrap_or(-1);
    // Not `live()`: a spawn under way must not make every leader adoptable. A
    // leader of ours not registered yet is found by its group first (its record
    // is made before the reaper hears of it); only another executor's leader
    // mid-spawn could be taken, and an agent has one executor (tests have more).
    let leaders = REAPER.leaders();
    limits::sample_groups(pgids, agent, |pid| {
        if leaders.contains(&pid) {
            return None;
        }
        let attempt = attempt_of(pid)?;
        targets.iter().position(|t| t.0 == attempt)
    })
}

impl Inner {
    /// Tells the orphan guard about the groups that escaped running tasks
    /// (`escaped`, from a sampling of all of them) and that the ones it heard of
    /// before and are not among them are gone. Must hold the state lock, so two
    /// samplings cannot interleave their lines.
    pub(super) fn guard_escaped(&self, st: &mut State, escaped: BTreeSet<libc::pid_t>) {
        let Some(g) = &self.cfg.orphan_guard else {
            return;
        };
        for &pgid in escaped.difference(&st.guarded_escapees) {
            g.spawned(pgid);
        }
        for &pgid in st.guarded_escapees.difference(&escaped) {
            g.exited(pgid);
        }
        st.guarded_escapees = escaped;
    }
}

/// One child of the agent that is not a registered leader.
struct Candidate {
    pid: libc::pid_t,
    /// Pins the process, so a signal never reaches a reused pid.
    pidfd: OwnedFd,
    attempt: AttemptId,
}

/// Kills the escaped processes of ended attempts that are the agent's
/// children now. Returns whether it killed any (their children are re-parented
/// to the agent next, so another sweep is due).
pub(super) fn sweep() -> bool {
    let Some(first) = REAPER.live() else {
        return false;
    };
    let candidates: Vec<Candidate> = agent_children()
        .into_iter()
        .filter(|pid| !first.leaders.contains(pid))
        .filter_map(|pid| {
            let pidfd = pidfd_open(pid)?;
            let attempt = attempt_of(pid)?;
            Some(Candidate {
                pid,
                pidfd,
                attempt,
            })
        })
        .collect();
    if candidates.is_empty() {
        return false;
    }
    // Again, now that the candidates are pinned: a leader registered since the
    // first look is not one of them, and no spawn may be half done.
    let Some(live) = REAPER.live() else {
        return false;
    };
    let mut killed = false;
    for c in candidates {
        if live.leaders.contains(&c.pid) {
            continue;
        }
        // One of a running attempt is its task's business (and the guard's).
        if !live.attempts.contains_key(&c.attempt) {
            killed |= kill(&c);
        }
    }
    killed
}

/// Sweeps until a sweep kills nothing (bounded): for the agent's exit, when
/// every task was just killed and their escapees are being re-parented.
pub(super) fn sweep_until_quiet() {
    for _ in 0..QUIET_ROUNDS_MAX {
        if !sweep() {
            // One more look: the last kills' children may not have moved yet.
            std::thread::sleep(QUIET_PAUSE);
            if !sweep() {
                return;
            }
        }
        std::thread::sleep(QUIET_PAUSE);
    }
}

/// SIGKILLs an escapee and, if it leads one, its process group (first, while
/// the pinned leader keeps the group id from being reused).
fn kill(c: &Candidate) -> bool {
    if pgid_of(c.pid) == Some(c.pid) {
        // SAFETY: plain syscall with integer arguments.
        unsafe { libc::killpg(c.pid, libc::SIGKILL) };
    }
    // SAFETY: a pidfd we own; no siginfo is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            c.pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        tracing::info!(
            pid = c.pid,
            attempt = c.attempt,
            "killed a process that outlived its task"
        );
    }
    rc == 0
}

/// The pids of the agent's children, over all its threads (a child is listed
/// under the thread that spawned it; an orphan under the one it went to).
fn agent_children() -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<libc::pid_t>().ok()),
        );
    }
    pids
}

/// The attempt a process was started under, from its start-up environment;
/// never the agent's own (it runs inside a task itself: its helpers and its
/// orphan guard inherit that value, and they are not escapees).
pub(super) fn attempt_of(pid: libc::pid_t) -> Option<AttemptId> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let own = std::env::var_os("SCALABLE_ATTEMPT_ID");
    let own = own
        .as_ref()
        .and_then(|v| v.to_str()?.parse::<AttemptId>().ok());
    attempt_in(&environ).filter(|a| Some(*a) != own)
}

/// `SCALABLE_ATTEMPT_ID` in a NUL-separated environment block.
fn attempt_in(environ: &[u8]) -> Option<AttemptId> {
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(ATTEMPT_ENV))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// The process group of `pid` (field 5 of its stat).
fn pgid_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    crate::limits::parse_stat(&stat).map(|(pgid, _)| pgid)
}

/// A pidfd for `pid` (Linux 5.3+); `None` if it is gone or the kernel lacks it.
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_env::{assignment, env};
    use super::super::ExecEvent;
    use super::*;
    use scalable_common::protocol::AttemptEnd;

    #[test]
    fn attempt_is_read_from_an_environment_block() {
        assert_eq!(attempt_in(b"A=1\0SCALABLE_ATTEMPT_ID=42\0B=2\0"), Some(42));
        assert_eq!(attempt_in(b"SCALABLE_ATTEMPT_ID=7"), Some(7));
        assert_eq!(attempt_in(b"XSCALABLE_ATTEMPT_ID=7\0"), None);
        assert_eq!(attempt_in(b"SCALABLE_ATTEMPT_ID=x\0"), None);
        assert_eq!(attempt_in(b""), None);
    }

    /// Alive and not a zombie (read from /proc: `ps` would be reaped).
    fn alive(pid: libc::pid_t) -> bool {
        std::fs::read(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let i = stat.iter().rposition(|&b| b == b')')?;
                Some(stat.get(i + 2) != Some(&b'Z'))
            })
            .unwrap_or(false)
    }

    fn wait_dead(pid: libc::pid_t, within: Duration) {
        let until = Instant::now() + within;
        while alive(pid) {
            assert!(Instant::now() < until, "process {pid} outlived its task");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid a task wrote into `name` in its cwd.
    fn read_pid(dir: &std::path::Path, name: &str) -> libc::pid_t {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < until, "no {name}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // Attempt ids here are unique in the test process: an escapee is spared
    // while an attempt with its id runs in any executor of the process.

    /// Regression (issue 12, defect 5): `setsid sleep 1000 &` outlived its task.
    #[test]
    fn setsid_daemon_dies_when_its_task_ends() {
        let mut e = env();
        let mut a = assignment(
            9001,
            &[
                "sh",
                "-c",
                "setsid sleep 1001 & echo $! > daemon.pid; sleep 0.3; exit 0",
            ],
        );
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let pid = read_pid(e.dir.path(), "daemon.pid");
        wait_dead(pid, Duration::from_secs(3));
    }

    /// Regression (issue 12, defect 5): a double-forked daemon in its own
    /// session survived a cancel.
    #[test]
    fn double_forked_daemon_dies_with_a_cancel() {
        let mut e = env();
        let mut a = assignment(
            9002,
            &[
                "sh",
                "-c",
                "sh -c 'setsid sh -c \"echo \\$\\$ > daemon.pid; exec sleep 1002\" &' ; sleep 100",
            ],
        );
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        e.exec.start(&a);
        assert!(matches!(e.recv(), ExecEvent::Started(_)));
        let pid = read_pid(e.dir.path(), "daemon.pid");
        assert!(alive(pid));
        assert!(e.exec.stop(9002, AttemptEnd::Cancelled));
        let (_, r) = e.wait(9002);
        assert_eq!(r.end, AttemptEnd::Cancelled);
        wait_dead(pid, Duration::from_secs(3));
    }

    /// Regression (issue 12, defect 5): a walltime left the daemon behind.
    #[test]
    fn daemon_dies_with_a_walltime() {
        let mut e = env();
        let mut a = assignment(
            9005,
            &[
                "sh",
                "-c",
                "setsid sleep 1005 & echo $! > daemon.pid; sleep 100",
            ],
        );
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        a.walltime_ms = Some(500);
        let (_, r) = e.run(&a);
        assert_eq!(r.end, AttemptEnd::TimedOut);
        wait_dead(read_pid(e.dir.path(), "daemon.pid"), Duration::from_secs(3));
    }

    /// Regression (issue 12, defect 5): the agent's exit left daemons behind.
    #[test]
    fn daemon_dies_with_kill_all_now() {
        let e = env();
        let mut a = assignment(
            9003,
            &[
                "sh",
                "-c",
                "setsid sleep 1003 & echo $! > daemon.pid; sleep 100",
            ],
        );
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        e.exec.start(&a);
        let pid = read_pid(e.dir.path(), "daemon.pid");
        e.exec.kill_all_now();
        // kill_all_now returns once it is done: no waiting for a later sweep.
        wait_dead(pid, Duration::from_millis(200));
    }

    /// A daemon of a task that still runs is its task's business.
    #[test]
    fn daemon_of_a_running_task_is_left_alone() {
        let mut e = env();
        let mut a = assignment(
            9004,
            &[
                "sh",
                "-c",
                "setsid sleep 1004 & echo $! > daemon.pid; sleep 1.5",
            ],
        );
        a.cwd = e.dir.path().to_string_lossy().into_owned();
        e.exec.start(&a);
        let pid = read_pid(e.dir.path(), "daemon.pid");
        std::thread::sleep(Duration::from_millis(1200));
        assert!(alive(pid), "killed while its task runs");
        let (_, r) = e.wait(9004);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        wait_dead(pid, Duration::from_secs(3));
    }
}
