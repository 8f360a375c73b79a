//! The agent's event log (`--event-log FILE`): one line per spawn, kill, result
//! sent, acknowledgement received, promotion and discard, for test oracles that
//! do not trust the broker's store (research/reliability.md §5.1, N3-N5).
//!
//! Owns: the file and the line format. It must not be needed for anything but
//! observation: the agent behaves the same with or without it, and without the
//! flag nothing is formatted or written (callers hold an `Option<EventLog>`).
//!
//! The file is opened with `O_APPEND` and each line is one `write(2)`, so
//! several agents (and the tasks' own ground-truth logs) may share a file
//! without tearing lines. Write errors are reported once and then ignored: the
//! log is an oracle, not a reason to stop running tasks.
//!
//! Lines (`<attempt>` and `<task>` are ids, `<class>` is `AttemptEnd::class`):
//! ```text
//! spawn <attempt> <task> <pid>
//! kill <attempt> <class>            (the end the kill will report: TIMEOUT, CANCELLED, ...)
//! result <attempt> <class>          (every send, resends included)
//! ack <attempt> counted|ignored
//! promote <attempt> <path>          (one per output renamed into its final place)
//! discard <attempt>                 (a staged attempt's outputs thrown away)
//! keep <attempt>                    (asked back by the broker, kept: already started or ended)
//! ```

use std::fmt::Arguments;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// One line is formatted into a stack-sized buffer first; longer lines (long
/// paths) fall back to the heap. Either way the line is a single `write`.
const LINE_BYTES_TYPICAL: usize = 256;

/// An append-only log file shared by the session and the executor.
#[derive(Debug)]
pub struct EventLog {
    file: File,
    /// Set after the first failed write, so a full disk logs one warning, not one
    /// per event.
    failed: AtomicBool,
}

impl EventLog {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> io::Result<EventLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(EventLog {
            file,
            failed: AtomicBool::new(false),
        })
    }

    /// Appends one line (`args` without the newline) in one `write`.
    pub fn line(&self, args: Arguments<'_>) {
        let mut buf = Vec::with_capacity(LINE_BYTES_TYPICAL);
        // Writing into a Vec cannot fail.
        let _ = buf.write_fmt(args);
        buf.push(b'\n');
        // O_APPEND: the kernel places the whole buffer at the end atomically for a
        // regular file; a short write (disk full) is an error here, not a retry, so
        // a line is never split across two writes.
        let res = (&self.file).write(&buf).and_then(|n| {
            if n == buf.len() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write ({n} of {} bytes)", buf.len()),
                ))
            }
        });
        if let Err(e) = res {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot write the event log: {e}; further errors are not shown");
            }
        }
    }
}

/// Logs a line to an `Option<EventLog>`-like value (anything with `as_deref`)
/// if there is one; formats nothing otherwise.
#[macro_export]
macro_rules! log_event {
    ($log:expr, $($arg:tt)*) => {
        if let Some(log) = $log {
            log.line(format_args!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lines_are_appended_whole_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        std::fs::write(&path, "earlier\n").expect("write");
        let log = EventLog::open(&path).expect("open");
        let some: Option<Arc<EventLog>> = Some(Arc::new(log));
        log_event!(some.as_deref(), "spawn {} {} {}", 7, 3, 12345);
        log_event!(some.as_deref(), "kill {} {}", 7, "CANCELLED");
        log_event!(some.as_deref(), "result {} {}", 7, "CANCELLED");
        log_event!(some.as_deref(), "ack {} {}", 7, "ignored");
        log_event!(some.as_deref(), "promote {} {}", 8, "/w/out/a.txt");
        log_event!(some.as_deref(), "discard {}", 7);
        let none: Option<Arc<EventLog>> = None;
        log_event!(none.as_deref(), "never {}", 1);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "earlier\nspawn 7 3 12345\nkill 7 CANCELLED\nresult 7 CANCELLED\nack 7 ignored\n\
             promote 8 /w/out/a.txt\ndiscard 7\n"
        );
    }

    #[test]
    fn threads_sharing_the_log_never_tear_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.log");
        let log = Arc::new(EventLog::open(&path).expect("open"));
        let long = "x".repeat(LINE_BYTES_TYPICAL * 2);
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = log.clone();
                let long = &long;
                s.spawn(move || {
                    for i in 0..200 {
                        log.line(format_args!("result {t}{i:03} {long}"));
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 800);
        for l in lines {
            assert!(l.starts_with("result ") && l.ends_with(&long), "{l}");
        }
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let e = EventLog::open(Path::new("/nonexistent/dir/events.log")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/events.log"), "{e}");
    }
}
