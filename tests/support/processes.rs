//! Processes the tests watch by pid: whether one still lives, the pid a task
//! wrote to a file, and a wait for one to die that never leaves it behind.
//!
//! Must not: start processes (the `Broker` does) or know any test's files.

use std::time::Duration;

use super::{wait_until, Broker};

/// Whether `pid` runs; a zombie is dead for our purpose (it waits only for
/// its reaper).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The pid a task wrote to `name` in the broker's work dir, once it did.
pub fn pid_in(b: &Broker, name: &str) -> i32 {
    let path = b.work().join(name);
    wait_until(Duration::from_secs(30), name, || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Waits at most `within` for `pid` to die (`what` names the wait); if it
/// does not, kills it, so the other tests do not inherit it, and fails.
pub fn dies(pid: i32, within: Duration, what: &str) {
    let outcome = std::panic::catch_unwind(|| wait_until(within, what, || !alive(pid)));
    if outcome.is_err() {
        kill9(pid);
        panic!("{what}: process {pid} still runs");
    }
}
