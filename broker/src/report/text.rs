//! The text report: seed 002's workers block and scaling events, then the
//! pegasus-statistics summary, the per-job breakdown, failures by reason
//! class, badput and queue wait.
//!
//! Pure: data and figures in, a `String` out; plain ASCII, times in seconds
//! with three decimals, sizes with a unit. Stored text goes through
//! `printable`. Must not compute figures (`summary` does).

use scalable_common::units::format_size;

use super::accountability::Accountability;
use super::model::ReportData;
use super::summary::{staged_totals, JobBreakdown, Summary};
use crate::output::escape::printable;
use crate::output::table::{percent, secs3, Align, Table};

/// Failures the text lists by name (the counts cover every one).
pub const TEXT_FAILURES_MAX: usize = 10;

pub fn render(d: &ReportData, s: &Summary) -> String {
    let mut out = format!(
        "Run {} ({}): {}\n",
        d.run.id,
        printable(&d.run.name),
        d.run.state
    );
    out.push_str("Workers:\n");
    if s.workers.is_empty() {
        out.push_str("  none recorded\n");
    }
    for w in &s.workers {
        out.push_str(&format!(
            "  {}: {} started, {} removed, {} final\n",
            printable(&w.tag),
            w.started,
            w.removed,
            w.final_
        ));
    }
    out.push_str(&format!(
        "Scaling events: {} scale-up, {} scale-down\n\n",
        s.scaling.scale_up, s.scaling.scale_down
    ));
    summary_into(d, s, &mut out);
    if !s.jobs.is_empty() {
        out.push_str("\nPer job (times in seconds; cpu in cores used; % of the request):\n");
        jobs_table(&s.jobs).render_into(&mut out);
    }
    failures_into(d, s, &mut out);
    accountability_into(&s.accountability, &mut out);
    out
}

/// The advisor's predictions against what happened, beside the percentile's.
fn accountability_into(a: &Accountability, out: &mut String) {
    if a.is_empty() {
        return;
    }
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
    out.push_str(&format!(
        "
Advisor, predicted against actual ({} sized attempts, {} on their fallback):
",
        a.advised.attempts, a.fallbacks
    ));
    for (name, s) in [("advisor", &a.advised), ("percentile", &a.percentile)] {
        out.push_str(&format!(
            "  {name:<10}  coverage {:>6}  mean over-allocation {:>7}  run-time error {:>7}
",
            pct(s.coverage),
            pct(s.over_allocation),
            pct(s.run_time_error)
        ));
    }
}

fn summary_into(d: &ReportData, s: &Summary, out: &mut String) {
    let mut t = Table::new(&[
        ("Type", Align::Left),
        ("Succeeded", Align::Right),
        ("Failed", Align::Right),
        ("Cancelled", Align::Right),
        ("Cached", Align::Right),
        ("Incomplete", Align::Right),
        ("Total", Align::Right),
        ("Retries", Align::Right),
        ("Total+Retries", Align::Right),
    ]);
    let r = &d.run;
    t.row(vec![
        "Tasks".into(),
        r.succeeded.to_string(),
        r.failed.to_string(),
        r.cancelled.to_string(),
        r.cached.to_string(),
        r.incomplete.to_string(),
        r.tasks.to_string(),
        r.retries.to_string(),
        (r.tasks + r.retries).to_string(),
    ]);
    let lines = t.lines();
    let rule = "-".repeat(lines.iter().map(|l| l.len()).max().unwrap_or(0));
    out.push_str(&format!("Summary\n{rule}\n"));
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(&format!("{rule}\n"));
    let q = &s.queue_wait;
    out.push_str(&format!(
        "Workflow wall time:   {} s\n\
         Cumulative run time:  {} s over {} attempts\n\
         Badput:               {} s ({}% of the run time: attempts that failed or were lost)\n\
         Queue wait ({} -> started): mean {} s, max {} s, total {} s over {} attempts\n",
        secs3(s.wall_time_ms),
        secs3(s.cumulative_run_time_ms),
        s.attempts,
        secs3(s.badput_ms),
        percent(s.badput_ms, s.cumulative_run_time_ms, 1),
        q.from,
        secs3(q.mean_ms),
        secs3(q.max_ms),
        secs3(q.total_ms),
        q.attempts
    ));
    if let Some(line) = staged_line(d) {
        out.push_str(&line);
    }
}

/// What staging moved over the run (agents without a shared filesystem),
/// one line; `None` when nothing was staged.
fn staged_line(d: &ReportData) -> Option<String> {
    let t = staged_totals(d)?;
    let m = t.moved;
    let size = scalable_common::units::format_size;
    Some(format!(
        "Staged:               {} in ({} s), {} out ({} s), {} of checkpoints ({} s) over {} attempts\n",
        size(m.in_bytes),
        secs3(m.in_ms),
        size(m.out_bytes),
        secs3(m.out_ms),
        size(m.checkpoint_bytes),
        secs3(m.checkpoint_ms),
        t.attempts
    ))
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |p| format!("{p:.1}%"))
}

fn jobs_table(jobs: &[JobBreakdown]) -> Table {
    let mut t = Table::new(&[
        ("Job", Align::Left),
        ("Tasks", Align::Right),
        ("Attempts", Align::Right),
        ("OK", Align::Right),
        ("Failed", Align::Right),
        ("Time min", Align::Right),
        ("mean", Align::Right),
        ("max", Align::Right),
        ("RSS min", Align::Right),
        ("mean", Align::Right),
        ("max", Align::Right),
        ("Cpu", Align::Right),
        ("Cpu %", Align::Right),
        ("Mem % mean", Align::Right),
        ("max", Align::Right),
        ("Badput", Align::Right),
    ]);
    for j in jobs {
        let time = |f: fn(&super::summary::MinMeanMax) -> u64| {
            j.run_time_ms.as_ref().map_or("-".into(), |m| secs3(f(m)))
        };
        let rss = |f: fn(&super::summary::MinMeanMax) -> u64| {
            j.peak_rss_bytes
                .as_ref()
                .map_or("-".into(), |m| format_size(f(m)))
        };
        t.row(vec![
            j.job.clone(),
            j.tasks.to_string(),
            j.attempts.to_string(),
            j.succeeded.to_string(),
            j.failed.to_string(),
            time(|m| m.min),
            time(|m| m.mean),
            time(|m| m.max),
            rss(|m| m.min),
            rss(|m| m.mean),
            rss(|m| m.max),
            j.cpu_cores_mean.map_or("-".into(), |c| format!("{c:.2}")),
            opt_pct(j.cpu_used_pct_mean),
            opt_pct(j.memory_used_pct_mean),
            opt_pct(j.memory_used_pct_max),
            secs3(j.badput_ms),
        ]);
    }
    t
}

fn failures_into(d: &ReportData, s: &Summary, out: &mut String) {
    let failed: Vec<_> = s
        .ends_by_class
        .iter()
        .filter(|c| !matches!(c.class.as_str(), "SUCCESS" | "RETURNED"))
        .collect();
    if failed.is_empty() {
        out.push_str("\nFailures by reason: none\n");
        return;
    }
    out.push_str("\nFailures by reason (attempts):\n");
    let mut t = Table::new(&[("Class", Align::Left), ("Attempts", Align::Right)]);
    for c in &failed {
        t.row(vec![format!("  {}", c.class), c.count.to_string()]);
    }
    t.render_into(out);
    let total: u64 = failed.iter().map(|c| c.count).sum();
    out.push_str("First failed attempts:\n");
    for f in d.failures.iter().take(TEXT_FAILURES_MAX) {
        let code = f
            .exit_code
            .map_or(String::new(), |c| format!(" (exit code {c})"));
        let detail = if f.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", f.detail)
        };
        out.push_str(&format!(
            "  {} attempt {}: {}{code}{}\n",
            printable(&f.task),
            f.number,
            f.end_class,
            printable(&detail)
        ));
    }
    let shown = d.failures.len().min(TEXT_FAILURES_MAX) as u64;
    if total > shown {
        out.push_str(&format!(
            "  ... and {} more (scalable analyze {} lists failed tasks with their stderr)\n",
            total - shown,
            d.run.id
        ));
    }
}
