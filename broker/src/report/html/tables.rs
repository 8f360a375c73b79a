//! The HTML report's tables: the summary figures, workers per tag, the
//! per-job breakdown, failures with their stderr tails, pilots, scaling
//! decisions and predicted-versus-actual (each saying "none recorded" when
//! empty).
//!
//! Bounded: failures are the loader's sample (the first
//! `FAILURES_SHOWN_MAX`, with the total beside), pilots and events the
//! first [`TABLE_ROWS_MAX`], each table saying how many it left out. Pure;
//! it must not compute figures.

use std::fmt::Write;

use scalable_common::units::format_size;

use super::super::model::ReportData;
use super::super::summary::{staged_totals, JobBreakdown, Summary};
use super::svg::{class_colour, esc};
use crate::output::table::secs3;

/// Rows of the pilots and events tables at most.
pub const TABLE_ROWS_MAX: usize = 500;

fn none_recorded(out: &mut String) {
    out.push_str(r#"<p class="none">none recorded</p>"#);
}

fn more(out: &mut String, shown: usize, total: u64, what: &str) {
    if total > shown as u64 {
        let _ = write!(
            out,
            r#"<p class="note">{shown} of {total} {what} shown.</p>"#
        );
    }
}

pub fn summary(d: &ReportData, s: &Summary) -> String {
    let r = &d.run;
    let q = &s.queue_wait;
    let cards = [
        ("Tasks", r.tasks.to_string()),
        ("Succeeded", r.succeeded.to_string()),
        ("Failed", r.failed.to_string()),
        ("Cancelled", r.cancelled.to_string()),
        ("Cached", r.cached.to_string()),
        ("Incomplete", r.incomplete.to_string()),
        ("Retries", r.retries.to_string()),
        ("Attempts", s.attempts.to_string()),
        ("Wall time", format!("{} s", secs3(s.wall_time_ms))),
        (
            "Cumulative run time",
            format!("{} s", secs3(s.cumulative_run_time_ms)),
        ),
        ("Badput", format!("{} s", secs3(s.badput_ms))),
        (
            "Mean queue wait",
            format!("{} s (from {})", secs3(q.mean_ms), q.from),
        ),
    ];
    let size = format_size;
    // Only for runs whose agents staged files (no shared filesystem).
    let staged = staged_totals(d).map(|t| {
        let m = t.moved;
        [
            (
                "Staged in",
                format!("{} in {} s", size(m.in_bytes), secs3(m.in_ms)),
            ),
            (
                "Staged out",
                format!("{} in {} s", size(m.out_bytes), secs3(m.out_ms)),
            ),
            (
                "Checkpoints",
                format!(
                    "{} in {} s",
                    size(m.checkpoint_bytes),
                    secs3(m.checkpoint_ms)
                ),
            ),
        ]
    });
    let mut out = String::from(r#"<div class="cards">"#);
    for (k, v) in cards.into_iter().chain(staged.into_iter().flatten()) {
        let _ = write!(
            out,
            r#"<div class="card"><b>{}</b><span>{}</span></div>"#,
            esc(&v),
            k
        );
    }
    out.push_str("</div>");
    out
}

pub fn workers(s: &Summary) -> String {
    let mut out = String::new();
    if s.workers.is_empty() {
        none_recorded(&mut out);
    } else {
        out.push_str("<table><tr><th>Tag</th><th>Started</th><th>Removed</th><th>Final</th></tr>");
        for w in &s.workers {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.tag),
                w.started,
                w.removed,
                w.final_
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<p>Scaling events: {} scale-up, {} scale-down (from the {}).</p>",
        s.scaling.scale_up,
        s.scaling.scale_down,
        if s.scaling.source == "decisions" {
            "scaler's decisions"
        } else {
            "pilot records"
        }
    );
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |p| format!("{p:.1}%"))
}

pub fn jobs(jobs: &[JobBreakdown]) -> String {
    let mut out = String::from(
        "<table><tr><th>Job</th><th>Tasks</th><th>Attempts</th><th>Succeeded</th><th>Failed</th>\
         <th>Run time min / mean / max (s)</th><th>Peak RSS min / mean / max</th>\
         <th>Cores used</th><th>% of cpus</th><th>% of memory (mean / max)</th><th>Badput (s)</th></tr>",
    );
    for j in jobs {
        let time = j.run_time_ms.map_or("-".into(), |m| {
            format!("{} / {} / {}", secs3(m.min), secs3(m.mean), secs3(m.max))
        });
        let rss = j.peak_rss_bytes.map_or("-".into(), |m| {
            format!(
                "{} / {} / {}",
                format_size(m.min),
                format_size(m.mean),
                format_size(m.max)
            )
        });
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{time}</td><td>{rss}</td>\
             <td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            esc(&j.job),
            j.tasks,
            j.attempts,
            j.succeeded,
            j.failed,
            j.cpu_cores_mean.map_or("-".into(), |c| format!("{c:.2}")),
            pct(j.cpu_used_pct_mean),
            pct(j.memory_used_pct_mean),
            pct(j.memory_used_pct_max),
            secs3(j.badput_ms)
        );
    }
    out.push_str("</table>");
    out
}

pub fn failures(d: &ReportData, s: &Summary) -> String {
    let mut out = String::new();
    let failed: Vec<_> = s
        .ends_by_class
        .iter()
        .filter(|c| !matches!(c.class.as_str(), "SUCCESS" | "RETURNED"))
        .collect();
    if failed.is_empty() {
        none_recorded(&mut out);
        return out;
    }
    out.push_str("<p>");
    for c in &failed {
        let _ = write!(
            out,
            r#"<span class="chip" style="background:{}">{} {}</span> "#,
            class_colour(Some(&c.class)),
            esc(&c.class),
            c.count
        );
    }
    out.push_str("</p><table><tr><th>Attempt</th><th>Task</th><th>#</th><th>Reason</th><th>Exit</th><th>Detail</th><th>Agent</th><th>stderr (tail)</th></tr>");
    for f in &d.failures {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td><span class="chip" style="background:{}">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td><details><summary>{} bytes</summary><pre>{}</pre></details></td></tr>"#,
            f.attempt_id,
            esc(&f.task),
            f.number,
            class_colour(Some(&f.end_class)),
            esc(&f.end_class),
            f.exit_code.map_or("-".into(), |c| c.to_string()),
            esc(&f.detail),
            esc(&f.agent),
            f.stderr_tail.len(),
            esc(&f.stderr_tail)
        );
    }
    out.push_str("</table>");
    let total: u64 = failed.iter().map(|c| c.count).sum();
    more(&mut out, d.failures.len(), total, "failed attempts");
    if total > d.failures.len() as u64 {
        let _ = write!(
            out,
            r#"<p class="note">scalable analyze {} lists every failed task with its stderr.</p>"#,
            d.run.id
        );
    }
    out
}

pub fn pilots(d: &ReportData) -> String {
    let mut out = String::new();
    if d.pilots.is_empty() {
        none_recorded(&mut out);
        return out;
    }
    out.push_str("<table><tr><th>Pilot</th><th>Tag</th><th>Provider id</th><th>State</th><th>Queue wait (s)</th><th>Reason</th></tr>");
    for p in d.pilots.iter().take(TABLE_ROWS_MAX) {
        let wait = p
            .connected_at_ms
            .map_or("-".into(), |c| secs3(c.saturating_sub(p.submitted_at_ms)));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{wait}</td><td>{}</td></tr>",
            esc(&p.id),
            esc(p.tag.as_deref().unwrap_or("-")),
            esc(&p.provider_id),
            esc(&p.state),
            esc(p.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    more(
        &mut out,
        TABLE_ROWS_MAX.min(d.pilots.len()),
        d.pilots.len() as u64,
        "pilots",
    );
    out
}

pub fn scaling_decisions(d: &ReportData) -> String {
    let mut out = String::new();
    if d.scaling_decisions.is_empty() {
        none_recorded(&mut out);
        return out;
    }
    out.push_str("<table><tr><th>At (s)</th><th>Tag</th><th>Before</th><th>After</th><th>Confidence</th><th>Reasoning</th></tr>");
    for s in &d.scaling_decisions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            secs3(s.at_ms.saturating_sub(d.run.submitted_at_ms)),
            esc(s.tag.as_deref().unwrap_or("-")),
            s.before,
            s.after,
            s.confidence.map_or("-".into(), |c| format!("{c:.2}")),
            esc(&s.reasoning)
        );
    }
    out.push_str("</table>");
    out
}

pub fn predictions(d: &ReportData) -> String {
    let mut out = String::new();
    if d.predictions.is_empty() {
        none_recorded(&mut out);
        return out;
    }
    out.push_str("<table><tr><th>Task type</th><th>Quantity</th><th>Predicted</th><th>Actual</th><th>Error</th><th>Method</th></tr>");
    for p in &d.predictions {
        let err = p.actual.filter(|a| *a != 0.0).map_or("-".into(), |a| {
            format!("{:+.1}%", (p.predicted - a) * 100.0 / a)
        });
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{err}</td><td>{}</td></tr>",
            esc(&p.task_type),
            esc(&p.quantity),
            p.predicted,
            p.actual.map_or("-".into(), |a| a.to_string()),
            esc(&p.method)
        );
    }
    out.push_str("</table>");
    out
}

pub fn events(d: &ReportData) -> String {
    let mut out = String::new();
    if d.events.is_empty() {
        none_recorded(&mut out);
        return out;
    }
    out.push_str("<table><tr><th>At (s)</th><th>Kind</th><th>Detail</th></tr>");
    for e in d.events.iter().take(TABLE_ROWS_MAX) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            secs3(e.at_ms.saturating_sub(d.run.submitted_at_ms)),
            esc(&e.kind),
            esc(&e.detail)
        );
    }
    out.push_str("</table>");
    let total = d.events.len() as u64 + d.run.events_dropped;
    more(
        &mut out,
        TABLE_ROWS_MAX.min(d.events.len()),
        total,
        "events",
    );
    out
}
