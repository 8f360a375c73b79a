//! The progress of one run on stderr for `wait` and `submit --wait`, with
//! what blocks it when it cannot move (the core's typed reasons in `why`'s
//! words), and the closing summary those commands print.
//!
//! Must not: ask the broker or sleep; the command polls and passes the counts
//! and `now` in.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use scalable_common::explain::{Reason, ReasonCount};
use scalable_common::protocol::{Counts, RunStatus};

use super::why::reason_text;

/// Least time between two plain progress lines.
pub const PROGRESS_PLAIN_INTERVAL_MS: u64 = 2_000;

/// Progress of one run for `wait` and `submit --wait`, on stderr: a bar when
/// stderr is a terminal, otherwise a plain line at most every
/// [`PROGRESS_PLAIN_INTERVAL_MS`] and when the run is done.
pub struct Progress {
    run: u64,
    total: u64,
    bar: Option<ProgressBar>,
    last_line_at_ms: Option<u64>,
    last_line: Option<String>,
}

impl Progress {
    /// A bar if stderr is a terminal, plain lines otherwise.
    pub fn new(run: u64, total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "run {prefix} [{bar:40}] {pos}/{len} done, {msg} ({elapsed})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(run.to_string());
            Progress {
                run,
                total,
                bar: Some(bar),
                last_line_at_ms: None,
                last_line: None,
            }
        } else {
            Progress::plain(run, total)
        }
    }

    /// Plain lines whatever stderr is.
    pub fn plain(run: u64, total: u64) -> Progress {
        Progress {
            run,
            total,
            bar: None,
            last_line_at_ms: None,
            last_line: None,
        }
    }

    /// Shows the latest counts and what blocks the run, if anything.
    pub fn update(&mut self, counts: &Counts, blocked: &[ReasonCount], now_ms: u64) {
        if let Some(line) = self.advance(counts, blocked, now_ms) {
            eprintln!("{line}");
        }
    }

    /// Shows the final counts once, and leaves the bar on screen.
    pub fn finish(&mut self, counts: &Counts) {
        if let Some(line) = self.conclude(counts) {
            eprintln!("{line}");
        }
    }

    /// Updates the bar, or returns the plain line due now, if any.
    fn advance(&mut self, counts: &Counts, blocked: &[ReasonCount], now_ms: u64) -> Option<String> {
        self.take_total(counts);
        let done = counts.done();
        let blocked = blocked_text(counts, blocked);
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
            bar.set_position(done);
            bar.set_message(bar_message(counts) + &blocked);
            return None;
        }
        let due = match self.last_line_at_ms {
            None => true,
            Some(at) => now_ms.saturating_sub(at) >= PROGRESS_PLAIN_INTERVAL_MS,
        };
        let line = self.line(counts) + &blocked;
        let finished_now = done >= self.total && self.last_line.as_ref() != Some(&line);
        if !(due || finished_now) {
            return None;
        }
        self.last_line_at_ms = Some(now_ms);
        self.last_line = Some(line.clone());
        Some(line)
    }

    /// Finishes the bar, or returns the final plain line unless it was the last one.
    fn conclude(&mut self, counts: &Counts) -> Option<String> {
        self.take_total(counts);
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
            bar.set_position(counts.done());
            bar.finish_with_message(bar_message(counts));
            return None;
        }
        let line = self.line(counts);
        if self.last_line.as_ref() == Some(&line) {
            return None;
        }
        self.last_line = Some(line.clone());
        Some(line)
    }

    /// The broker's counts are the truth about the total once it has any tasks.
    fn take_total(&mut self, counts: &Counts) {
        let total = counts.total();
        if total > 0 {
            self.total = total;
        }
    }

    /// `run 4: 120/1000 done (succeeded 118, failed 2, running 6, assigned 2)`:
    /// running tasks have started on their agent; assigned ones wait in an
    /// agent's queue (shown when there are any).
    fn line(&self, c: &Counts) -> String {
        let mut line = format!(
            "run {}: {}/{} done (succeeded {}, failed {}, running {}",
            self.run,
            c.done(),
            self.total,
            c.succeeded,
            c.failed,
            c.running
        );
        if c.assigned > 0 {
            line.push_str(&format!(", assigned {}", c.assigned));
        }
        if c.cancelled > 0 {
            line.push_str(&format!(", cancelled {}", c.cancelled));
        }
        if c.cached > 0 {
            line.push_str(&format!(", cached {}", c.cached));
        }
        line.push(')');
        line
    }
}

/// What keeps the run from moving, to follow the counts: `; 3 blocked: no
/// connected agent has tag demeter`. While tasks run, the reasons of a run
/// that merely waits its turn (busy agents, `max_running`, a reservation, a
/// retry's backoff) are left out; when nothing runs, every reason is shown.
fn blocked_text(c: &Counts, blocked: &[ReasonCount]) -> String {
    let moving = c.assigned + c.running > 0;
    blocked
        .iter()
        .filter(|b| {
            !moving
                || !matches!(
                    b.reason,
                    Reason::WaitingForResources { .. }
                        | Reason::Throttled { .. }
                        | Reason::Reserved { .. }
                        | Reason::Backoff { .. }
                )
        })
        .map(|b| format!("; {} blocked: {}", b.tasks, reason_text(&b.reason)))
        .collect()
}

/// `6 running, 2 assigned, 3 failed`: the message beside the bar.
fn bar_message(c: &Counts) -> String {
    format!(
        "{} running, {} assigned, {} failed",
        c.running, c.assigned, c.failed
    )
}

/// The line `wait` ends with on stderr:
/// `run 4 failed: 990 succeeded, 8 failed, 2 cancelled of 1000` (cached tasks
/// count as succeeded).
pub fn finished_line(s: &RunStatus) -> String {
    format!(
        "run {} {}: {} succeeded, {} failed, {} cancelled of {}",
        s.run,
        s.state,
        s.counts.succeeded + s.counts.cached,
        s.counts.failed,
        s.counts.cancelled,
        s.counts.total()
    )
}

/// What to run next when a waited-for run did not succeed.
pub fn failed_hint(run: u64) -> String {
    format!("hint: scalable analyze {run} names each failed task with its stderr")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_fixtures::{counts, run_status};

    #[test]
    fn plain_progress_prints_every_two_seconds_and_when_done() {
        let mut p = Progress::plain(4, 1000);
        let c = counts([800, 72, 2, 6, 118, 2, 0, 0]);
        assert_eq!(
            p.advance(&c, &[], 10_000).as_deref(),
            Some("run 4: 120/1000 done (succeeded 118, failed 2, running 6, assigned 2)")
        );
        assert_eq!(p.advance(&c, &[], 11_999), None);
        assert!(p.advance(&c, &[], 12_000).is_some());

        let done = counts([0, 0, 0, 0, 990, 8, 2, 0]);
        assert_eq!(
            p.advance(&done, &[], 12_500).as_deref(),
            Some("run 4: 1000/1000 done (succeeded 990, failed 8, running 0, cancelled 2)")
        );
        // Nothing new to say: neither a repeat nor a final line.
        assert_eq!(p.advance(&done, &[], 12_600), None);
        assert_eq!(p.conclude(&done), None);

        let mut q = Progress::plain(5, 2);
        assert_eq!(
            q.conclude(&counts([0, 0, 0, 0, 1, 0, 0, 1])).as_deref(),
            Some("run 5: 2/2 done (succeeded 1, failed 0, running 0, cached 1)")
        );
    }

    /// Regression (issue 13, item 5): a run that can never move printed
    /// `0/N done` forever; the line says what blocks it.
    #[test]
    fn the_line_says_what_blocks_the_run() {
        let mut p = Progress::plain(4, 3);
        let stuck = counts([0, 3, 0, 0, 0, 0, 0, 0]);
        let blocked = [ReasonCount {
            reason: Reason::NoAgentWithTag {
                tag: "demeter".into(),
            },
            tasks: 3,
        }];
        assert_eq!(
            p.advance(&stuck, &blocked, 0).as_deref(),
            Some("run 4: 0/3 done (succeeded 0, failed 0, running 0); 3 blocked: no connected agent has tag demeter")
        );
        // A run that only waits its turn says so when nothing runs ...
        let busy = [ReasonCount {
            reason: Reason::Backoff { remaining_ms: 900 },
            tasks: 1,
        }];
        assert_eq!(
            p.advance(&stuck, &busy, 2_000).as_deref(),
            Some("run 4: 0/3 done (succeeded 0, failed 0, running 0); 1 blocked: retrying after a failure; backoff ends in 900 ms")
        );
        // ... and not while its other tasks run.
        let moving = counts([0, 1, 0, 2, 0, 0, 0, 0]);
        assert_eq!(
            p.advance(&moving, &busy, 4_000).as_deref(),
            Some("run 4: 0/3 done (succeeded 0, failed 0, running 2)")
        );
    }

    #[test]
    fn the_closing_line_counts_cached_tasks_as_succeeded() {
        let mut s = run_status();
        s.state = "failed".into();
        s.counts = counts([0, 0, 0, 0, 5, 2, 1, 3]);
        assert_eq!(
            finished_line(&s),
            "run 3 failed: 8 succeeded, 2 failed, 1 cancelled of 11"
        );
        assert_eq!(
            failed_hint(3),
            "hint: scalable analyze 3 names each failed task with its stderr"
        );
    }
}
