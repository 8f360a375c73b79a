//! The CLI's one output layer (STYLE habit 3): every response the `scalable`
//! binary prints goes through here, as text for people or as JSON for tools.
//!
//! Owns: the text layouts of `status` (pegasus-status), `stats`
//! (pegasus-statistics), `analyze` (pegasus-analyzer) and `agents`, the JSON
//! form of any response, shell quoting of argv, UTC timestamps, and the
//! progress display of `wait` / `submit --wait`.
//!
//! Must not: talk to the broker, read a clock, or decide exit codes. Every
//! formatter is a pure function from protocol values (and `now` where it needs
//! one) to a `String`, so its output is snapshot-tested. Text is plain ASCII
//! with columns sized from the data; no line has trailing spaces.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use scalable_common::protocol::{
    AgentInfo, Counts, FailedAttempt, FailedTask, PilotInfo, RunAnalysis, RunStats, RunStatus,
    ScaleReport, TaskLogs,
};
use scalable_common::units::{format_duration_ms, format_size};

/// How a command prints its data (`--json` picks `Json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Lines of a failed task's stderr (or stdout) that `analyze` shows.
pub const ANALYZE_TAIL_LINES_MAX: usize = 20;
/// Least time between two plain progress lines.
pub const PROGRESS_PLAIN_INTERVAL_MS: u64 = 2_000;
/// Width of the rules in `stats`, unless its table is wider.
const RULE_WIDTH_MIN: usize = 60;

// ------------------------------------------------------------------ tables

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A text table: columns as wide as their widest cell, two spaces apart.
struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "table row width");
        self.rows.push(cells);
    }

    /// The rendered lines, header first, without trailing newlines.
    fn lines(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|cells| {
                let mut line = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let align = self.aligns.get(i).copied().unwrap_or(Align::Left);
                    if i > 0 {
                        line.push_str("  ");
                    }
                    match align {
                        Align::Left => line.push_str(&format!("{cell:<width$}")),
                        Align::Right => line.push_str(&format!("{cell:>width$}")),
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    fn render_into(&self, out: &mut String) {
        for line in self.lines() {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

// ------------------------------------------------------------------ small formats

/// `part` of `whole` as a percentage with `decimals` places; 0 of 0 is 0.
fn percent(part: u64, whole: u64, decimals: usize) -> String {
    let p = if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    };
    format!("{p:.decimals$}")
}

/// Milliseconds as seconds with three decimals (`1.250`), exact.
fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A short duration for tables: `45s`, `5m12s`, `2h05m`, `3d04h`.
pub fn short_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as `2026-11-22 10:01:02 UTC`.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Quotes `s` for a POSIX shell: bare when it only has safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:,+=@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command line as a user could paste it into a shell.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bytes `scalable logs` writes: stderr with `--stderr`, stdout otherwise.
pub fn logs_bytes(l: &TaskLogs, stderr: bool) -> &[u8] {
    if stderr {
        &l.stderr
    } else {
        &l.stdout
    }
}

/// Any response as pretty JSON (`--json`).
pub fn json<T: Serialize>(v: &T) -> String {
    match serde_json::to_string_pretty(v) {
        Ok(text) => text,
        // Protocol types only hold strings, numbers, sequences and structs, so this
        // cannot happen; still, a tool reading stdout gets JSON rather than a panic.
        Err(e) => serde_json::json!({ "error": format!("cannot encode as json: {e}") }).to_string(),
    }
}

// ------------------------------------------------------------------ status

/// `scalable status`: per run a header and pegasus-status-like counts per job.
/// Assigned tasks count as running; a CACHED column appears only when a run has
/// cached tasks and a TAG column only when a job has a tag.
pub fn status_text(runs: &[RunStatus]) -> String {
    if runs.is_empty() {
        return "no runs\n".to_string();
    }
    let mut out = String::new();
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let when = match run.finished_at_ms {
            Some(end) => format!(
                "submitted {}, finished after {}",
                format_utc(run.submitted_at_ms),
                format_duration_ms(end.saturating_sub(run.submitted_at_ms))
            ),
            None => format!("submitted {}", format_utc(run.submitted_at_ms)),
        };
        out.push_str(&format!(
            "run {} {}: {} ({when})\n",
            run.run, run.name, run.state
        ));

        let cached = run.counts.cached > 0 || run.jobs.iter().any(|j| j.counts.cached > 0);
        let tagged = run.jobs.iter().any(|j| j.tag.is_some());
        let mut columns = vec![("JOB", Align::Left)];
        if tagged {
            columns.push(("TAG", Align::Left));
        }
        columns.extend([
            ("WAITING", Align::Right),
            ("READY", Align::Right),
            ("RUNNING", Align::Right),
            ("SUCCEEDED", Align::Right),
            ("FAILED", Align::Right),
            ("CANCELLED", Align::Right),
        ]);
        if cached {
            columns.push(("CACHED", Align::Right));
        }
        columns.push(("%DONE", Align::Right));
        let mut table = Table::new(&columns);

        let row = |name: &str, tag: Option<&str>, c: &Counts| {
            let mut cells = vec![name.to_string()];
            if tagged {
                cells.push(tag.unwrap_or("-").to_string());
            }
            cells.extend([
                c.waiting.to_string(),
                c.ready.to_string(),
                (c.assigned + c.running).to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.cancelled.to_string(),
            ]);
            if cached {
                cells.push(c.cached.to_string());
            }
            cells.push(percent(c.done(), c.total(), 1));
            cells
        };
        for job in &run.jobs {
            table.row(row(&job.name, job.tag.as_deref(), &job.counts));
        }
        table.row(row(
            "TOTAL",
            if tagged { Some("") } else { None },
            &run.counts,
        ));
        table.render_into(&mut out);
    }
    out
}

// ------------------------------------------------------------------ stats

/// `scalable stats`: pegasus-statistics' summary table and wall times, then a
/// per-job breakdown with durations in seconds.
pub fn stats_text(s: &RunStats) -> String {
    let cached = s.cached > 0;
    let mut columns = vec![
        ("Type", Align::Left),
        ("Succeeded", Align::Right),
        ("Failed", Align::Right),
        ("Cancelled", Align::Right),
    ];
    if cached {
        columns.push(("Cached", Align::Right));
    }
    columns.extend([
        ("Incomplete", Align::Right),
        ("Total", Align::Right),
        ("Retries", Align::Right),
        ("Total+Retries", Align::Right),
    ]);
    let mut summary = Table::new(&columns);
    let mut cells = vec![
        "Tasks".to_string(),
        s.succeeded.to_string(),
        s.failed.to_string(),
        s.cancelled.to_string(),
    ];
    if cached {
        cells.push(s.cached.to_string());
    }
    cells.extend([
        s.incomplete.to_string(),
        s.tasks.to_string(),
        s.retries.to_string(),
        (s.tasks + s.retries).to_string(),
    ]);
    summary.row(cells);
    let summary = summary.lines();
    let width = summary
        .iter()
        .map(|l| l.len())
        .max()
        .unwrap_or(0)
        .max(RULE_WIDTH_MIN);
    let rule = "-".repeat(width);

    let mut out = format!("run {} ({}): {}\n{rule}\n", s.run, s.name, s.state);
    for line in &summary {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    let facts = [
        (
            "Workflow wall time",
            format_duration_ms(s.workflow_wall_time_ms),
        ),
        (
            "Cumulative task wall time",
            format_duration_ms(s.cumulative_wall_time_ms),
        ),
        (
            "Cumulative task badput wall time",
            format_duration_ms(s.badput_ms),
        ),
        ("Attempts", s.attempts.to_string()),
        (
            "Lost attempts (no retry spent)",
            format!("{} ({} counted as crashes)", s.lost_attempts, s.crashes),
        ),
        ("Stale results ignored", s.stale_results.to_string()),
    ];
    let label_width = facts.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in facts {
        out.push_str(&format!("{label:<label_width$}  : {value}\n"));
    }

    if !s.jobs.is_empty() {
        out.push_str("\nPer job (times in seconds):\n");
        let mut jobs = Table::new(&[
            ("Job", Align::Left),
            ("Tasks", Align::Right),
            ("Succeeded", Align::Right),
            ("Failed", Align::Right),
            ("Retries", Align::Right),
            ("Min", Align::Right),
            ("Mean", Align::Right),
            ("Max", Align::Right),
            ("Total", Align::Right),
            ("Badput", Align::Right),
        ]);
        for j in &s.jobs {
            jobs.row(vec![
                j.name.clone(),
                j.tasks.to_string(),
                j.succeeded.to_string(),
                j.failed.to_string(),
                j.retries.to_string(),
                secs3(j.min_ms),
                secs3(j.mean_ms),
                secs3(j.max_ms),
                secs3(j.wall_time_ms),
                secs3(j.badput_ms),
            ]);
        }
        jobs.render_into(&mut out);
    }
    out
}

// ------------------------------------------------------------------ analyze

/// `scalable analyze`: pegasus-analyzer's summary, then every failed task with
/// its reason, command, attempts and the last lines of its output.
pub fn analyze_text(a: &RunAnalysis) -> String {
    let mut out = format!(
        "run {} ({}): {}\n\n*****Summary*****\n",
        a.run, a.name, a.state
    );
    let total_share = if a.total > 0 { "100.00" } else { "0.00" };
    let facts = [
        ("Total tasks", a.total, total_share.to_string()),
        (
            "# tasks succeeded",
            a.succeeded,
            percent(a.succeeded, a.total, 2),
        ),
        ("# tasks failed", a.failed, percent(a.failed, a.total, 2)),
        (
            "# tasks cancelled",
            a.cancelled,
            percent(a.cancelled, a.total, 2),
        ),
        (
            "# tasks unfinished",
            a.unfinished,
            percent(a.unfinished, a.total, 2),
        ),
    ];
    let label_width = facts.iter().map(|(l, _, _)| l.len()).max().unwrap_or(0);
    for (label, n, share) in facts {
        out.push_str(&format!("{label:<label_width$} : {n} ({share}%)\n"));
    }

    let Some(first) = a.failed_tasks.first() else {
        out.push_str("\nno failed tasks\n");
        return out;
    };
    for task in &a.failed_tasks {
        out.push('\n');
        failed_task_into(task, &mut out);
    }
    out.push_str(&format!(
        "\nhint: scalable logs {} --stderr prints the whole stderr\n",
        first.path
    ));
    out
}

fn failed_task_into(t: &FailedTask, out: &mut String) {
    out.push_str(&format!("*****Failed task {}*****\n", t.path));
    out.push_str(&format!("task id : {}\n", t.task));
    out.push_str(&format!("state   : {}\n", t.state));
    out.push_str(&format!("reason  : {}\n", t.reason));
    out.push_str(&format!("argv    : {}\n", shell_join(&t.argv)));
    for attempt in &t.attempts {
        out.push_str(&attempt_line(attempt));
        out.push('\n');
    }
    let (name, text) = if !t.stderr_tail.trim().is_empty() {
        ("stderr", t.stderr_tail.as_str())
    } else if !t.stdout_tail.trim().is_empty() {
        ("stdout", t.stdout_tail.as_str())
    } else {
        out.push_str("stderr and stdout were empty\n");
        return;
    };
    out.push_str(&format!("{name} (last lines):\n"));
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let skip = lines.len().saturating_sub(ANALYZE_TAIL_LINES_MAX);
    for line in &lines[skip..] {
        let line = line.trim_end();
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("  {line}\n"));
        }
    }
}

/// `attempt 1: EXIT_CODE exit 3 on agent a1 (node01) after 0.120 s - detail`.
fn attempt_line(a: &FailedAttempt) -> String {
    let mut line = format!("attempt {}: {}", a.attempt_number, a.class);
    if let Some(code) = a.exit_code {
        line.push_str(&format!(" exit {code}"));
    }
    if !a.agent.is_empty() {
        line.push_str(&format!(" on agent {}", a.agent));
        if !a.host.is_empty() {
            line.push_str(&format!(" ({})", a.host));
        }
    }
    line.push_str(&format!(" after {} s", secs3(a.duration_ms)));
    let detail = a.detail.trim();
    if !detail.is_empty() {
        line.push_str(&format!(" - {detail}"));
    }
    line
}

// ------------------------------------------------------------------ agents

/// `scalable scale`: what was done (or would be, with `--dry-run`).
pub fn scale_text(r: &ScaleReport) -> String {
    let tag = r.tag.as_deref().unwrap_or("(generic pool)");
    let mut out = format!(
        "{}target {} tag {tag}: {} -> {} pilots\n",
        if r.dry_run { "dry run: " } else { "" },
        r.target,
        r.before,
        r.after
    );
    for (pilot, provider_id) in &r.started {
        out.push_str(&format!("  started {pilot} ({provider_id})\n"));
    }
    for (what, list) in [
        ("cancelled (not connected yet)", &r.cancelled),
        ("drained (idle agent leaves)", &r.drained),
        ("stopped (busy, --force)", &r.killed),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("  {what}: {}\n", list.join(", ")));
        }
    }
    if r.kept_busy > 0 {
        out.push_str(&format!(
            "  kept {} busy pilot(s); --force stops them (their tasks go back to ready)\n",
            r.kept_busy
        ));
    }
    if !r.commands.is_empty() {
        out.push_str(if r.dry_run { "would run:\n" } else { "ran:\n" });
        for c in &r.commands {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}

/// `scalable pilots`: every pilot with its provider id, state and queue wait.
pub fn pilots_text(pilots: &[PilotInfo]) -> String {
    if pilots.is_empty() {
        return "no pilots\n".to_string();
    }
    let mut table = Table::new(&[
        ("PILOT", Align::Left),
        ("TARGET", Align::Left),
        ("TAG", Align::Left),
        ("PROVIDER_ID", Align::Left),
        ("STATE", Align::Left),
        ("AGENT", Align::Right),
        ("QUEUE_WAIT", Align::Right),
        ("REASON", Align::Left),
    ]);
    for p in pilots {
        table.row(vec![
            p.id.clone(),
            p.target.clone(),
            p.tag.clone().unwrap_or_else(|| "-".into()),
            p.provider_id.clone(),
            p.state.to_string(),
            p.agent.map_or("-".into(), |a| a.to_string()),
            p.connected_at_ms.map_or("-".into(), |c| {
                format_duration_ms(c.saturating_sub(p.submitted_at_ms))
            }),
            p.reason.clone().unwrap_or_default(),
        ]);
    }
    table.lines().join("\n") + "\n"
}

/// `scalable agents`: one row per connected agent; UP is the time since it
/// connected, as of `now_ms`.
pub fn agents_text(agents: &[AgentInfo], now_ms: u64) -> String {
    if agents.is_empty() {
        return "no agents connected\n".to_string();
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("HOST", Align::Left),
        ("TAGS", Align::Left),
        ("CPUS", Align::Right),
        ("MEMORY", Align::Right),
        ("GPUS", Align::Right),
        ("FREE_CPUS", Align::Right),
        ("FREE_MEM", Align::Right),
        ("RUNTIMES", Align::Left),
        ("LIMITS", Align::Left),
        ("RUNNING", Align::Right),
        ("QUEUED", Align::Right),
        ("DONE", Align::Right),
        ("UP", Align::Right),
    ]);
    for a in agents {
        let tags = if a.tags.is_empty() {
            "-".to_string()
        } else {
            a.tags.join(",")
        };
        table.row(vec![
            a.id.to_string(),
            a.name.clone(),
            a.hostname.clone(),
            tags,
            a.resources.cpus.to_string(),
            format_size(a.resources.memory_bytes),
            a.resources.gpus.to_string(),
            a.free.cpus.to_string(),
            format_size(a.free.memory_bytes),
            if a.runtimes.is_empty() {
                "-".to_string()
            } else {
                a.runtimes.join(",")
            },
            if a.limit_mode.is_empty() {
                "-".to_string()
            } else {
                a.limit_mode.clone()
            },
            a.running.to_string(),
            a.queued.to_string(),
            a.completed.to_string(),
            if a.connected {
                short_duration(now_ms.saturating_sub(a.connected_at_ms))
            } else {
                "away".to_string()
            },
        ]);
    }
    let mut out = String::new();
    table.render_into(&mut out);
    out
}

// ------------------------------------------------------------------ progress

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

    /// Shows the latest counts.
    pub fn update(&mut self, counts: &Counts, now_ms: u64) {
        if let Some(line) = self.advance(counts, now_ms) {
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
    fn advance(&mut self, counts: &Counts, now_ms: u64) -> Option<String> {
        self.take_total(counts);
        let done = counts.done();
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
            bar.set_position(done);
            bar.set_message(bar_message(counts));
            return None;
        }
        let due = match self.last_line_at_ms {
            None => true,
            Some(at) => now_ms.saturating_sub(at) >= PROGRESS_PLAIN_INTERVAL_MS,
        };
        let line = self.line(counts);
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

    /// `run 4: 120/1000 done (succeeded 118, failed 2, running 8)`.
    fn line(&self, c: &Counts) -> String {
        let mut line = format!(
            "run {}: {}/{} done (succeeded {}, failed {}, running {}",
            self.run,
            c.done(),
            self.total,
            c.succeeded,
            c.failed,
            c.assigned + c.running
        );
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

/// `12 running, 3 failed`: the message beside the bar.
fn bar_message(c: &Counts) -> String {
    format!("{} running, {} failed", c.assigned + c.running, c.failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalable_common::protocol::{JobStats, JobStatus};
    use scalable_common::resources::Resources;

    const SUBMITTED_MS: u64 = 1_795_341_662_000; // 2026-11-22 10:01:02 UTC

    /// Counts in column order: waiting, ready, assigned, running, succeeded,
    /// failed, cancelled, cached.
    fn counts([w, r, a, run, s, f, c, k]: [u64; 8]) -> Counts {
        Counts {
            waiting: w,
            ready: r,
            assigned: a,
            running: run,
            succeeded: s,
            failed: f,
            cancelled: c,
            cached: k,
        }
    }

    fn run_status() -> RunStatus {
        let jobs = vec![
            JobStatus {
                name: "prepare".into(),
                tag: None,
                counts: counts([0, 0, 0, 0, 1, 0, 0, 0]),
            },
            JobStatus {
                name: "simulate".into(),
                tag: None,
                counts: counts([0, 2, 1, 7, 988, 2, 0, 0]),
            },
            JobStatus {
                name: "postprocess".into(),
                tag: None,
                counts: counts([1, 0, 0, 0, 0, 0, 0, 0]),
            },
        ];
        let mut total = Counts::default();
        for j in &jobs {
            total.add(&j.counts);
        }
        RunStatus {
            run: 3,
            name: "demeter-ssp".into(),
            state: "running".into(),
            submitted_at_ms: SUBMITTED_MS,
            finished_at_ms: None,
            counts: total,
            jobs,
        }
    }

    #[test]
    fn utc_timestamps_need_no_crate() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(SUBMITTED_MS), "2026-11-22 10:01:02 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(4_107_542_399_999), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn status_snapshot() {
        let expected = r"run 3 demeter-ssp: running (submitted 2026-11-22 10:01:02 UTC)
JOB          WAITING  READY  RUNNING  SUCCEEDED  FAILED  CANCELLED  %DONE
prepare            0      0        0          1       0          0  100.0
simulate           0      2        8        988       2          0   99.0
postprocess        1      0        0          0       0          0    0.0
TOTAL              1      2        8        989       2          0   98.9
";
        assert_eq!(status_text(&[run_status()]), expected);
    }

    #[test]
    fn status_shows_cached_and_tags_only_when_present() {
        let mut finished = run_status();
        finished.run = 4;
        finished.state = "succeeded".into();
        finished.finished_at_ms = Some(SUBMITTED_MS + 126_000);
        finished.jobs = vec![JobStatus {
            name: "fit".into(),
            tag: Some("gpu".into()),
            counts: counts([0, 0, 0, 0, 3, 0, 0, 2]),
        }];
        finished.counts = counts([0, 0, 0, 0, 3, 0, 0, 2]);
        let expected = r"run 4 demeter-ssp: succeeded (submitted 2026-11-22 10:01:02 UTC, finished after 2 mins, 6 secs)
JOB    TAG  WAITING  READY  RUNNING  SUCCEEDED  FAILED  CANCELLED  CACHED  %DONE
fit    gpu        0      0        0          3       0          0       2  100.0
TOTAL             0      0        0          3       0          0       2  100.0
";
        assert_eq!(status_text(&[finished]), expected);
        assert_eq!(status_text(&[]), "no runs\n");
    }

    #[test]
    fn stats_snapshot() {
        let stats = RunStats {
            run: 3,
            name: "demeter-ssp".into(),
            state: "succeeded".into(),
            tasks: 20,
            succeeded: 20,
            failed: 0,
            cancelled: 0,
            cached: 0,
            incomplete: 0,
            retries: 1,
            attempts: 21,
            lost_attempts: 2,
            stale_results: 1,
            crashes: 1,
            workflow_wall_time_ms: 126_000,
            cumulative_wall_time_ms: 38_400,
            badput_ms: 0,
            jobs: vec![
                JobStats {
                    name: "prepare".into(),
                    tasks: 1,
                    succeeded: 1,
                    attempts: 1,
                    wall_time_ms: 1_250,
                    min_ms: 1_250,
                    mean_ms: 1_250,
                    max_ms: 1_250,
                    ..Default::default()
                },
                JobStats {
                    name: "simulate".into(),
                    tasks: 19,
                    succeeded: 19,
                    retries: 1,
                    attempts: 20,
                    wall_time_ms: 37_150,
                    badput_ms: 0,
                    min_ms: 120,
                    mean_ms: 1_955,
                    max_ms: 12_004,
                    ..Default::default()
                },
            ],
        };
        let expected = r"run 3 (demeter-ssp): succeeded
------------------------------------------------------------------------------
Type   Succeeded  Failed  Cancelled  Incomplete  Total  Retries  Total+Retries
Tasks         20       0          0           0     20        1             21
------------------------------------------------------------------------------
Workflow wall time                : 2 mins, 6 secs
Cumulative task wall time         : 38 secs
Cumulative task badput wall time  : 0.000 secs
Attempts                          : 21
Lost attempts (no retry spent)    : 2 (1 counted as crashes)
Stale results ignored             : 1

Per job (times in seconds):
Job       Tasks  Succeeded  Failed  Retries    Min   Mean     Max   Total  Badput
prepare       1          1       0        0  1.250  1.250   1.250   1.250   0.000
simulate     19         19       0        1  0.120  1.955  12.004  37.150   0.000
";
        assert_eq!(stats_text(&stats), expected);
    }

    fn analysis() -> RunAnalysis {
        let stderr: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        RunAnalysis {
            run: 3,
            name: "demeter-ssp".into(),
            state: "failed".into(),
            total: 21,
            succeeded: 19,
            failed: 1,
            cancelled: 1,
            unfinished: 0,
            failed_tasks: vec![
                FailedTask {
                    task: 42,
                    path: "3/simulate/7".into(),
                    state: "failed".into(),
                    reason: "exit code 3 after 2 attempts".into(),
                    argv: vec![
                        "python".into(),
                        "sim.py".into(),
                        "--label".into(),
                        "it's hot".into(),
                    ],
                    attempts: vec![
                        FailedAttempt {
                            attempt_number: 1,
                            class: "EXIT_CODE".into(),
                            exit_code: Some(3),
                            detail: "".into(),
                            agent: "a1".into(),
                            host: "node01".into(),
                            duration_ms: 120,
                        },
                        FailedAttempt {
                            attempt_number: 2,
                            class: "TIMEOUT".into(),
                            exit_code: None,
                            detail: "walltime 10 secs".into(),
                            agent: "a2".into(),
                            host: "node02".into(),
                            duration_ms: 10_000,
                        },
                    ],
                    stderr_tail: stderr,
                    stdout_tail: "ignored\n".into(),
                },
                FailedTask {
                    task: 43,
                    path: "3/postprocess/0".into(),
                    state: "cancelled".into(),
                    reason: "dependency failed".into(),
                    argv: vec!["post".into()],
                    attempts: vec![],
                    stderr_tail: "".into(),
                    stdout_tail: "".into(),
                },
            ],
        }
    }

    #[test]
    fn analyze_snapshot() {
        let expected = r"run 3 (demeter-ssp): failed

*****Summary*****
Total tasks        : 21 (100.00%)
# tasks succeeded  : 19 (90.48%)
# tasks failed     : 1 (4.76%)
# tasks cancelled  : 1 (4.76%)
# tasks unfinished : 0 (0.00%)

*****Failed task 3/simulate/7*****
task id : 42
state   : failed
reason  : exit code 3 after 2 attempts
argv    : python sim.py --label 'it'\''s hot'
attempt 1: EXIT_CODE exit 3 on agent a1 (node01) after 0.120 s
attempt 2: TIMEOUT on agent a2 (node02) after 10.000 s - walltime 10 secs
stderr (last lines):
  line 6
  line 7
  line 8
  line 9
  line 10
  line 11
  line 12
  line 13
  line 14
  line 15
  line 16
  line 17
  line 18
  line 19
  line 20
  line 21
  line 22
  line 23
  line 24
  line 25

*****Failed task 3/postprocess/0*****
task id : 43
state   : cancelled
reason  : dependency failed
argv    : post
stderr and stdout were empty

hint: scalable logs 3/simulate/7 --stderr prints the whole stderr
";
        assert_eq!(analyze_text(&analysis()), expected);
    }

    #[test]
    fn analyze_falls_back_to_stdout_and_says_when_nothing_failed() {
        let mut a = analysis();
        a.failed_tasks.truncate(1);
        a.failed_tasks[0].stderr_tail = "\n".into();
        a.failed_tasks[0].stdout_tail = "result: nan\n".into();
        a.failed_tasks[0].attempts.clear();
        let text = analyze_text(&a);
        assert!(
            text.contains("stdout (last lines):\n  result: nan\n"),
            "{text}"
        );

        let mut ok = analysis();
        ok.state = "succeeded".into();
        ok.succeeded = 21;
        ok.failed = 0;
        ok.cancelled = 0;
        ok.failed_tasks.clear();
        let expected = r"run 3 (demeter-ssp): succeeded

*****Summary*****
Total tasks        : 21 (100.00%)
# tasks succeeded  : 21 (100.00%)
# tasks failed     : 0 (0.00%)
# tasks cancelled  : 0 (0.00%)
# tasks unfinished : 0 (0.00%)

no failed tasks
";
        assert_eq!(analyze_text(&ok), expected);
    }

    #[test]
    fn agents_snapshot() {
        let now_ms = SUBMITTED_MS + 3 * 3_600_000;
        let agents = vec![
            AgentInfo {
                id: 1,
                name: "a1".into(),
                hostname: "node01.cluster".into(),
                tags: vec!["demeter".into(), "postprocess".into()],
                resources: Resources {
                    cpus: 32,
                    memory_bytes: 128 << 30,
                    gpus: 0,
                    custom: vec![],
                },
                free: Resources {
                    cpus: 4,
                    memory_bytes: 16 << 30,
                    gpus: 0,
                    custom: vec![],
                },
                running: 28,
                queued: 3,
                connected_at_ms: now_ms - 312_000,
                completed: 1204,
                runtimes: vec!["podman".into(), "docker".into()],
                limit_mode: "sampling".into(),
                pilot_id: None,
                connected: true,
            },
            AgentInfo {
                id: 12,
                name: "gpu-7".into(),
                hostname: "gpu07".into(),
                tags: vec![],
                resources: Resources {
                    cpus: 8,
                    memory_bytes: 3 << 29,
                    gpus: 2,
                    custom: vec![],
                },
                free: Resources::cpus(8),
                running: 0,
                queued: 0,
                connected_at_ms: now_ms - 7_500_000,
                completed: 0,
                runtimes: vec![],
                limit_mode: "cgroup-v2".into(),
                pilot_id: None,
                connected: true,
            },
        ];
        let expected = r"ID  NAME   HOST            TAGS                 CPUS  MEMORY  GPUS  FREE_CPUS  FREE_MEM  RUNTIMES       LIMITS     RUNNING  QUEUED  DONE     UP
 1  a1     node01.cluster  demeter,postprocess    32    128G     0          4       16G  podman,docker  sampling        28       3  1204  5m12s
12  gpu-7  gpu07           -                       8    1.5G     2          8        0B  -              cgroup-v2        0       0     0  2h05m
";
        assert_eq!(agents_text(&agents, now_ms), expected);
        assert_eq!(agents_text(&[], now_ms), "no agents connected\n");
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(45_999), "45s");
        assert_eq!(short_duration(312_000), "5m12s");
        assert_eq!(short_duration(7_500_000), "2h05m");
        assert_eq!(short_duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn json_of_a_run_status_is_pretty_json() {
        let mut run = run_status();
        run.state = "succeeded".into();
        let text = json(&run);
        assert!(text.contains("\"succeeded\""), "{text}");
        assert!(text.contains("\n  \"run\": 3,"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(back["counts"]["succeeded"], 989);
    }

    #[test]
    fn shell_quote_leaves_safe_words_bare() {
        assert_eq!(shell_quote("sim.py"), "sim.py");
        assert_eq!(shell_quote("--seed=7"), "--seed=7");
        assert_eq!(shell_quote("/data/x_1,2:3"), "/data/x_1,2:3");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn logs_bytes_picks_the_stream() {
        let logs = TaskLogs {
            task: 1,
            path: "1/a/0".into(),
            attempt_number: 1,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
            stdout_bytes: 3,
            stderr_bytes: 3,
        };
        assert_eq!(logs_bytes(&logs, true), b"err");
        assert_eq!(logs_bytes(&logs, false), b"out");
    }

    #[test]
    fn plain_progress_prints_every_two_seconds_and_when_done() {
        let mut p = Progress::plain(4, 1000);
        let c = counts([800, 72, 2, 6, 118, 2, 0, 0]);
        assert_eq!(
            p.advance(&c, 10_000).as_deref(),
            Some("run 4: 120/1000 done (succeeded 118, failed 2, running 8)")
        );
        assert_eq!(p.advance(&c, 11_999), None);
        assert!(p.advance(&c, 12_000).is_some());

        let done = counts([0, 0, 0, 0, 990, 8, 2, 0]);
        assert_eq!(
            p.advance(&done, 12_500).as_deref(),
            Some("run 4: 1000/1000 done (succeeded 990, failed 8, running 0, cancelled 2)")
        );
        // Nothing new to say: neither a repeat nor a final line.
        assert_eq!(p.advance(&done, 12_600), None);
        assert_eq!(p.conclude(&done), None);

        let mut q = Progress::plain(5, 2);
        assert_eq!(
            q.conclude(&counts([0, 0, 0, 0, 1, 0, 0, 1])).as_deref(),
            Some("run 5: 2/2 done (succeeded 1, failed 0, running 0, cached 1)")
        );
    }
}
