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
//! Cost: one short `write` per task start and end; measured in `scripts/bench.sh`.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The argument that turns `scalable-agent` into the guard.
pub const GUARD_ARG: &str = "__orphan-guard";

/// The agent's end of the pipe to its guard.
pub struct OrphanGuard {
    pipe: Mutex<ChildStdin>,
    _child: Child,
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
            pipe: Mutex::new(pipe),
            _child: child,
        })
    }

    fn send(&self, line: String) {
        let mut p = self
            .pipe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A dead guard must not stop the agent; it only loses the SIGKILL cover.
        let _ = p.write_all(line.as_bytes());
    }

    /// A task's process group exists.
    pub fn spawned(&self, pgid: i32) {
        self.send(format!("+{pgid}\n"));
    }

    /// A task's leader exited; its group is being killed and reaped.
    pub fn exited(&self, pgid: i32) {
        self.send(format!("-{pgid}\n"));
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
}
