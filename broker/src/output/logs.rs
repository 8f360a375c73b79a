//! What `scalable logs` writes: the kept bytes of one stream of an attempt,
//! and the note when the task wrote more than the broker kept.
//!
//! Must not: write to stdout or stderr; the command does.

use scalable_common::protocol::TaskLogs;

/// The bytes `scalable logs` writes: stderr with `--stderr`, stdout otherwise.
pub fn logs_bytes(l: &TaskLogs, stderr: bool) -> &[u8] {
    if stderr {
        &l.stderr
    } else {
        &l.stdout
    }
}

/// The note for stderr when only the tail of what the task wrote was kept.
pub fn logs_truncated_note(l: &TaskLogs, stderr: bool) -> Option<String> {
    let shown = logs_bytes(l, stderr).len() as u64;
    let total = if stderr {
        l.stderr_bytes
    } else {
        l.stdout_bytes
    };
    (total > shown)
        .then(|| format!("note: showing the last {shown} of {total} bytes the task wrote"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_bytes_picks_the_stream() {
        let logs = TaskLogs {
            task: 1,
            path: "1/a/0".into(),
            item: None,
            attempt_number: 1,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
            stdout_bytes: 3,
            stderr_bytes: 3,
            next: None,
        };
        assert_eq!(logs_bytes(&logs, true), b"err");
        assert_eq!(logs_bytes(&logs, false), b"out");
    }

    #[test]
    fn a_note_only_when_the_task_wrote_more_than_was_kept() {
        let mut logs = TaskLogs {
            task: 1,
            path: "1/a/0".into(),
            item: None,
            attempt_number: 1,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
            stdout_bytes: 3,
            stderr_bytes: 3,
            next: None,
        };
        assert_eq!(logs_truncated_note(&logs, false), None);
        logs.stderr_bytes = 4096;
        assert_eq!(logs_truncated_note(&logs, false), None);
        assert_eq!(
            logs_truncated_note(&logs, true).as_deref(),
            Some("note: showing the last 3 of 4096 bytes the task wrote")
        );
    }
}
