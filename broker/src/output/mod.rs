//! The CLI's one output layer (STYLE habit 3): what the `scalable` binary
//! prints, as text for people or as JSON for tools, one module per topic.
//!
//! Owns: the text layouts of `status` (pegasus-status), `stats`
//! (pegasus-statistics), `analyze` (pegasus-analyzer), `agents` and `pilots`,
//! `scale`, `scaling`, `plan` and `logs`; the JSON form of any response; UTC timestamps and
//! short durations; the progress display of `wait` / `submit --wait`; and
//! writing a finished text to stdout.
//!
//! Must not: talk to the broker, read a clock, or decide exit codes. Every
//! formatter is a pure function from protocol values (and `now` where it needs
//! one) to a `String`, so its output is snapshot-tested. Text is plain ASCII
//! with columns sized from the data; no line has trailing spaces. Shell quoting
//! lives in `scalable_common::quote`. Stored text (names, reasons, output
//! lines) never reaches the terminal raw: `escape::printable` escapes control
//! characters in every table cell and every line built from such data.

mod agents;
mod analyze;
pub(crate) mod escape;
mod json;
mod logs;
mod objective;
mod plan;
mod progress;
mod scale;
mod scaling;
mod stats;
mod status;
pub(crate) mod table;
mod task_name;
#[cfg(test)]
mod test_fixtures;
mod time;
mod transfers;
mod unrunnable;
mod why;

use std::io::Write;

pub use agents::{agents_text, pilots_text};
pub use analyze::{analyze_text, ANALYZE_TAIL_LINES_MAX};
pub use json::json;
pub use logs::{logs_bytes, logs_ending_note, logs_truncated_note};
pub use objective::objective_plan_text;
pub use plan::{plan_json, plan_text};
pub use progress::{failed_hint, finished_line, Progress, PROGRESS_PLAIN_INTERVAL_MS};
pub use scale::scale_text;
pub use scaling::scaling_text;
pub use stats::stats_text;
pub use status::status_text;
pub use task_name::task_label;
pub use time::{format_utc, short_duration};
pub use unrunnable::{unrunnable_hint, unrunnable_json, unrunnable_text};
pub use why::{cancelled_because, reason_text, why_text};

/// How a command prints its data (`--json` picks `Json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Writes `text` to stdout, with a final newline if it lacks one. A closed
/// stdout (`scalable status | head`) is not an error worth a message.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Writes raw bytes to stdout as they are (`scalable logs`).
pub fn print_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}
