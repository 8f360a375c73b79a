//! What `scalable logs` writes: the kept bytes of one stream of an attempt,
//! and the note when the task wrote more than the broker kept.
//!
//! Must not: write to stdout or stderr; the command does.

use scalable_common::protocol::TaskLogs;

use super::analyze::ending_words;
use super::escape::printable;
use super::task_name::task_label;

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

/// The note for stderr when the attempt shown did not succeed: the task
/// with its item, the attempt, and how it ended with its numbers:
/// `note: 3/sim/3 (item 4) attempt 2 ended MEMORY_EXHAUSTION peak 130M, limit 120M`.
pub fn logs_ending_note(l: &TaskLogs) -> Option<String> {
    let a = l.ended.as_ref().filter(|a| a.class != "SUCCESS")?;
    let mut note = format!(
        "note: {} attempt {} ended {}",
        task_label(&l.path, l.item.as_deref()),
        l.attempt_number,
        ending_words(a)
    );
    let detail = a.detail.trim();
    if !detail.is_empty() {
        note.push_str(&format!(" - {}", printable(detail)));
    }
    Some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three bytes of each stream, all kept.
    fn logs() -> TaskLogs {
        TaskLogs {
            task: 1,
            path: "1/a/0".into(),
            item: None,
            attempt_number: 1,
            ended: None,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
            stdout_bytes: 3,
            stderr_bytes: 3,
            next: None,
        }
    }

    #[test]
    fn logs_bytes_picks_the_stream() {
        let logs = logs();
        assert_eq!(logs_bytes(&logs, true), b"err");
        assert_eq!(logs_bytes(&logs, false), b"out");
    }

    #[test]
    fn a_note_only_when_the_task_wrote_more_than_was_kept() {
        let mut logs = logs();
        assert_eq!(logs_truncated_note(&logs, false), None);
        logs.stderr_bytes = 4096;
        assert_eq!(logs_truncated_note(&logs, false), None);
        assert_eq!(
            logs_truncated_note(&logs, true).as_deref(),
            Some("note: showing the last 3 of 4096 bytes the task wrote")
        );
    }

    #[test]
    fn a_failed_attempt_says_how_it_ended() {
        use scalable_common::protocol::FailedAttempt;
        let mut logs = TaskLogs {
            task: 9,
            path: "3/sim/3".into(),
            item: Some("4".into()),
            attempt_number: 2,
            ended: None,
            stdout: vec![],
            stderr: vec![],
            stdout_bytes: 0,
            stderr_bytes: 0,
            next: None,
        };
        assert_eq!(logs_ending_note(&logs), None, "still running");
        let mut ended = FailedAttempt {
            attempt_number: 2,
            class: "SUCCESS".into(),
            exit_code: Some(0),
            detail: "".into(),
            agent: "a".into(),
            host: "h".into(),
            duration_ms: 1,
            peak_rss_bytes: 130 << 20,
            memory_limit_bytes: Some(120 << 20),
            walltime_ms: None,
        };
        logs.ended = Some(Box::new(ended.clone()));
        assert_eq!(logs_ending_note(&logs), None, "a success says nothing");
        ended.class = "MEMORY_EXHAUSTION".into();
        ended.exit_code = None;
        logs.ended = Some(Box::new(ended));
        assert_eq!(
            logs_ending_note(&logs).as_deref(),
            Some("note: 3/sim/3 (item 4) attempt 2 ended MEMORY_EXHAUSTION peak 130M, limit 120M")
        );
    }
}
