//! How a task process ended, as an [`AttemptEnd`] (STYLE habit 5): one pure
//! function over what the executor observed, so every rule is unit-tested.
//!
//! Precedence, first match wins:
//! 1. the agent stopped it (walltime → `TimedOut`, memory sampler →
//!    `OutOfMemory`, cancel, drain): that end, whatever the exit status;
//! 2. the exit status was lost (a bug elsewhere) → `Exited{-1}`, never success;
//! 3. the kernel OOM-killed something in the task's cgroup → `OutOfMemory`;
//! 4. killed by a signal → `Signalled`;
//! 5. a podman/docker task with a memory limit exiting 137 (the runtime's cgroup
//!    OOM-killed the container's process) → `OutOfMemory`;
//! 6. non-zero within [`INVALID_INPUT_WINDOW`] of its start, with stderr saying a
//!    file was not found → `InvalidInput` (see [`missing_input`]);
//! 7. other non-zero → `Exited{code}`;
//! 8. zero, but declared outputs are missing → `OutputsMissing`; else success.

use std::time::Duration;

use scalable_common::protocol::AttemptEnd;

/// A failure this soon after the start may be a missing input (rule 6).
pub const INVALID_INPUT_WINDOW: Duration = Duration::from_secs(1);
/// Bytes of a stderr line kept as `InvalidInput::path` when no path is found.
const MISSING_LINE_BYTES_MAX: usize = 200;
/// The container runtime's exit code for a container killed by SIGKILL.
const CONTAINER_KILLED_CODE: i32 = 128 + libc::SIGKILL;

/// What the executor saw of one ended attempt.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The end the agent decided when it stopped the task, if it did.
    pub stopping: Option<AttemptEnd>,
    /// The raw wait status; `None` if it was lost.
    pub status: Option<libc::c_int>,
    /// The task's cgroup saw an OOM kill (cgroup-v2 mode).
    pub cgroup_oom: bool,
    /// The task ran in podman/docker with a `--memory` limit.
    pub container_memory_limited: bool,
    pub ran_for: Duration,
    /// The end of the task's stderr.
    pub stderr_tail: &'a [u8],
}

/// The end of an attempt; `missing_outputs` is only called for exit 0.
pub fn classify(o: &Observed<'_>, missing_outputs: impl FnOnce() -> Vec<String>) -> AttemptEnd {
    if let Some(end) = &o.stopping {
        return end.clone();
    }
    let Some(status) = o.status else {
        return AttemptEnd::Exited { code: -1 };
    };
    if o.cgroup_oom {
        return AttemptEnd::OutOfMemory;
    }
    if libc::WIFSIGNALED(status) {
        return AttemptEnd::Signalled {
            signal: libc::WTERMSIG(status),
        };
    }
    let code = libc::WEXITSTATUS(status);
    if code == CONTAINER_KILLED_CODE && o.container_memory_limited {
        return AttemptEnd::OutOfMemory;
    }
    if code != 0 {
        if o.ran_for < INVALID_INPUT_WINDOW {
            if let Some(path) = missing_input(o.stderr_tail) {
                return AttemptEnd::InvalidInput { path };
            }
        }
        return AttemptEnd::Exited { code };
    }
    let missing = missing_outputs();
    if missing.is_empty() {
        AttemptEnd::Exited { code: 0 }
    } else {
        AttemptEnd::OutputsMissing { missing }
    }
}

/// The heuristic of rule 6, kept simple on purpose: the last stderr line that
/// says `No such file or directory`, `FileNotFoundError` or `not found`. The
/// path is taken from it where the usual shapes allow (`cat: x: No such file…`,
/// Python's `…: 'x'`, `sh: 1: x: not found`); otherwise the line itself.
pub fn missing_input(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().map(str::trim).find(|l| {
        l.contains("No such file or directory")
            || l.contains("FileNotFoundError")
            || l.contains("not found")
    })?;
    Some(path_in(line).unwrap_or_else(|| bounded(line)))
}

fn path_in(line: &str) -> Option<String> {
    // Python: `FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'`.
    if let Some(rest) = line.split("No such file or directory: ").nth(1) {
        return unquote(rest);
    }
    // GNU tools and shells: `cat: x.csv: No such file or directory`,
    // `sh: 1: prog: not found`.
    for marker in [": No such file or directory", ": not found"] {
        if let Some(before) = line.split(marker).next().filter(|_| line.contains(marker)) {
            let last = before.rsplit(": ").next()?;
            let last = last
                .strip_prefix("cannot open ")
                .or_else(|| last.strip_prefix("can't open "))
                .unwrap_or(last);
            return unquote(last);
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim().trim_matches(['\'', '"', '‘', '’', '`']);
    (!s.is_empty()).then(|| bounded(s))
}

fn bounded(s: &str) -> String {
    if s.len() <= MISSING_LINE_BYTES_MAX {
        return s.to_string();
    }
    let mut end = MISSING_LINE_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> libc::c_int {
        code << 8
    }

    fn observed(status: libc::c_int) -> Observed<'static> {
        Observed {
            stopping: None,
            status: Some(status),
            cgroup_oom: false,
            container_memory_limited: false,
            ran_for: Duration::from_millis(10),
            stderr_tail: b"",
        }
    }

    fn no_outputs_missing() -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn each_ending_is_its_own_type() {
        let o = observed(exited(0));
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: 0 }
        );
        let o = observed(exited(3));
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: 3 }
        );
        let o = observed(libc::SIGSEGV);
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Signalled {
                signal: libc::SIGSEGV
            }
        );
        assert_eq!(classify(&o, no_outputs_missing).class(), "SIGNALED");
        let o = observed(exited(0));
        assert_eq!(
            classify(&o, || vec!["out.nc".into()]),
            AttemptEnd::OutputsMissing {
                missing: vec!["out.nc".into()]
            }
        );
    }

    #[test]
    fn our_own_stop_wins_over_the_status() {
        let mut o = observed(libc::SIGKILL);
        o.stopping = Some(AttemptEnd::TimedOut);
        assert_eq!(classify(&o, no_outputs_missing), AttemptEnd::TimedOut);
        o.stopping = Some(AttemptEnd::OutOfMemory);
        let end = classify(&o, no_outputs_missing);
        assert_eq!(
            (end.class(), end.spends_retry()),
            ("MEMORY_EXHAUSTION", true)
        );
    }

    #[test]
    fn lost_status_is_never_success() {
        let mut o = observed(0);
        o.status = None;
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: -1 }
        );
    }

    #[test]
    fn oom_from_a_cgroup_or_a_limited_container() {
        let mut o = observed(libc::SIGKILL);
        o.cgroup_oom = true;
        assert_eq!(classify(&o, no_outputs_missing), AttemptEnd::OutOfMemory);
        let mut o = observed(exited(137));
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: 137 }
        );
        o.container_memory_limited = true;
        assert_eq!(classify(&o, no_outputs_missing), AttemptEnd::OutOfMemory);
    }

    #[test]
    fn quick_failure_naming_a_missing_file_is_invalid_input() {
        let mut o = observed(exited(1));
        o.stderr_tail = b"cat: missing.txt: No such file or directory\n";
        let end = classify(&o, no_outputs_missing);
        assert_eq!(
            end,
            AttemptEnd::InvalidInput {
                path: "missing.txt".into()
            }
        );
        assert_eq!(end.class(), "INVALID_INPUT");
        // The same failure after a long run is an ordinary exit code.
        o.ran_for = INVALID_INPUT_WINDOW;
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: 1 }
        );
        // Success never looks at stderr.
        let mut o = observed(exited(0));
        o.stderr_tail = b"warning: cache.db: No such file or directory\n";
        assert_eq!(
            classify(&o, no_outputs_missing),
            AttemptEnd::Exited { code: 0 }
        );
    }

    #[test]
    fn missing_input_shapes() {
        let py = b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nFileNotFoundError: [Errno 2] No such file or directory: 'data/ssp1.csv'\n";
        assert_eq!(missing_input(py).as_deref(), Some("data/ssp1.csv"));
        assert_eq!(
            missing_input(b"sh: 1: frobnicate: not found\n").as_deref(),
            Some("frobnicate")
        );
        assert_eq!(
            missing_input(
                b"sh: 1: cannot open in.txt: No such file\nsh: in.txt: No such file or directory\n"
            )
            .as_deref(),
            Some("in.txt")
        );
        assert_eq!(
            missing_input(b"error: input file not found\n").as_deref(),
            Some("error: input file not found")
        );
        assert_eq!(missing_input(b"Segmentation fault\n"), None);
        assert_eq!(missing_input(b""), None);
        let long = format!("{} not found", "é".repeat(300));
        assert!(missing_input(long.as_bytes()).is_some_and(|p| p.len() <= 200));
    }
}
