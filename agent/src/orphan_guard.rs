//! Tasks die with the agent, even when the agent is SIGKILLed.
//!
//! The executor spawns without `pre_exec` (so no `PR_SET_PDEATHSIG`, see
//! `executor`), and a SIGKILL gives the agent no chance to clean up. So at start
//! the agent runs a tiny copy of itself (`scalable-agent __orphan-guard`) in its
//! own process group, with a pipe as its stdin. The agent writes `+PGID` when a
//! task starts and `-PGID` when its leader exited (before it is reaped, so the id
//! cannot be reused in between). When the pipe closes (the agent is gone, however
//! it died) the guard SIGKILLs every group still listed and exits.
//!
//! Cost: one short `write` per task, at its start: a `-PGID` is not written when
//! the leader exits but carried by the next `+PGID` (or by [`OrphanGuard::flush`],
//! which the executor's watchdog calls at each wake, at most 100 ms later while
//! tasks run and a second when none do). Each write wakes the guard process, so
//! this halves the guard's wake-ups (`scripts/bench.sh spawn`, issue 15). A late
//! `-PGID` is safe: until it arrives the guard would only kill a group id that is
//! gone, and a pid is reused only after the kernel has cycled through `pid_max`
//! (at least 32,768) others, far more forks than fit in a second.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The argument that turns `scalable-agent` into the guard.
pub const GUARD_ARG: &str = "__orphan-guard";

/// The agent's end of the pipe to its guard.
pub struct OrphanGuard {
    pipe: Mutex<Pipe>,
    _child: Child,
}

/// The pipe and the `-PGID` lines not written yet (see the module doc).
struct Pipe {
    stdin: ChildStdin,
    lines: Lines,
}

/// The text of the next write: the exits held back, then at most one start.
#[derive(Default)]
struct Lines {
    buf: String,
}

impl Lines {
    /// A leader exited: held back until the next write.
    fn exited(&mut self, pgid: i32) {
        let _ = writeln!(self.buf, "-{pgid}");
    }

    /// A group started: to be written now, with the exits held back.
    fn spawned(&mut self, pgid: i32) {
        let _ = writeln!(self.buf, "+{pgid}");
    }

    /// What to write, if anything; `clear` once it is written.
    fn pending(&self) -> Option<&[u8]> {
        (!self.buf.is_empty()).then_some(self.buf.as_bytes())
    }

    fn clear(&mut self) {
        self.buf.clear();
    }
}

impl std::fmt::Debug for OrphanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrphanGuard")
    }
}

impl OrphanGuard {
    /// Starts the guard process. Must run before the executor exists (its reaper
    /// waits for any child; the guard only exits after the agent is gone).
    pub fn start() -> std::io::Result<OrphanGuard> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(GUARD_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a signal to the agent's group does not take it along.
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the orphan guard"))?;
        Ok(OrphanGuard {
            pipe: Mutex::new(Pipe {
                stdin: pipe,
                lines: Lines::default(),
            }),
            _child: child,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A task's process group exists: told at once, with the exits held back.
    pub fn spawned(&self, pgid: i32) {
        let mut p = self.lock();
        p.lines.spawned(pgid);
        p.write_pending();
    }

    /// A task's leader exited; its group is being killed and reaped. Held back
    /// until the next start or [`OrphanGuard::flush`].
    pub fn exited(&self, pgid: i32) {
        self.lock().lines.exited(pgid);
    }

    /// Writes the exits held back, if any (the watchdog calls it at each wake).
    pub fn flush(&self) {
        self.lock().write_pending();
    }
}

impl Pipe {
    fn write_pending(&mut self) {
        if let Some(bytes) = self.lines.pending() {
            // A dead guard must not stop the agent; it only loses the SIGKILL cover.
            let _ = self.stdin.write_all(bytes);
            self.lines.clear();
        }
    }
}

impl Drop for OrphanGuard {
    fn drop(&mut self) {
        self.lock().write_pending();
    }
}

/// The guard's main: track groups until the pipe closes, then kill what is left.
pub fn run_guard() -> ! {
    // Ctrl-C or a SIGTERM meant for the agent must not take the guard first.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let live = track(std::io::stdin().lock());
    for pgid in live {
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    std::process::exit(0)
}

/// Reads `+PGID` / `-PGID` lines to the end; returns the groups still live.
fn track(input: impl BufRead) -> HashSet<i32> {
    let mut live = HashSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (op, num) = line.split_at(line.len().min(1));
        match (op, num.parse::<i32>()) {
            ("+", Ok(p)) if p > 1 => {
                live.insert(p);
            }
            ("-", Ok(p)) => {
                live.remove(&p);
            }
            _ => {}
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_groups_and_ignores_junk() {
        let input = "+100\n+200\n-100\nnonsense\n+1\n+-5\n+300\n-300\n";
        let live = track(input.as_bytes());
        assert_eq!(
            live,
            HashSet::from([200]),
            "pgid 1 and junk are never listed"
        );
    }

    /// Issue 15: an exit rides on the next start's write, so a task costs the
    /// guard one wake-up, not two; the guard reads the same lines either way.
    #[test]
    fn exits_wait_for_the_next_write() {
        let mut l = Lines::default();
        l.exited(100);
        l.exited(200);
        assert_eq!(l.pending(), Some(&b"-100\n-200\n"[..]));
        l.spawned(300);
        assert_eq!(l.pending(), Some(&b"-100\n-200\n+300\n"[..]));
        let live = track(l.pending().unwrap_or_default());
        assert_eq!(live, HashSet::from([300]));
        l.clear();
        assert_eq!(l.pending(), None, "nothing to write, no write");
    }
}
