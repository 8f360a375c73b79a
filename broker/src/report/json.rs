//! The JSON report: the figures of the text report and every row of the
//! data, one attempt per row. The field list is documented in
//! docs/report-json.md; it is stable: fields are added, never renamed or
//! dropped, and an absent value is `null`, never a missing key.
//!
//! Layout: one object; each section is one line, and each list of rows one
//! row per line, so the file diffs and greps well at 100,000 attempts.
//!
//! Pure: data and figures in, a `String` out. Must not compute figures.

use serde::Serialize;

use super::model::{ReportData, REPORT_FORMAT};
use super::summary::Summary;

pub fn render(d: &ReportData, s: &Summary) -> String {
    let mut out = String::with_capacity(256 + d.attempts.len() * 320);
    out.push_str("{\n");
    field(&mut out, "format", &REPORT_FORMAT);
    field(&mut out, "run", &d.run);
    field(&mut out, "workers", &s.workers);
    field(&mut out, "scaling_events", &s.scaling);
    field(&mut out, "totals", &Totals::of(s));
    field(&mut out, "queue_wait", &s.queue_wait);
    field(&mut out, "ends_by_class", &s.ends_by_class);
    rows(&mut out, "job_breakdown", &s.jobs);
    rows(&mut out, "jobs", &d.jobs);
    rows(&mut out, "agents", &d.agents);
    rows(&mut out, "pilots", &d.pilots);
    rows(&mut out, "events", &d.events);
    rows(&mut out, "failures", &d.failures);
    rows(&mut out, "scaling_decisions", &d.scaling_decisions);
    field(&mut out, "accountability", &s.accountability);
    rows(&mut out, "predictions", &d.predictions);
    rows(&mut out, "attempts", &d.attempts);
    // The last comma goes: JSON has no trailing commas.
    if out.ends_with(",\n") {
        out.truncate(out.len() - 2);
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

/// pegasus-statistics' wall times.
#[derive(Serialize)]
struct Totals {
    wall_time_ms: u64,
    cumulative_run_time_ms: u64,
    badput_ms: u64,
    attempts: u64,
}

impl Totals {
    fn of(s: &Summary) -> Totals {
        Totals {
            wall_time_ms: s.wall_time_ms,
            cumulative_run_time_ms: s.cumulative_run_time_ms,
            badput_ms: s.badput_ms,
            attempts: s.attempts,
        }
    }
}

fn compact<T: Serialize + ?Sized>(v: &T) -> String {
    // Our own plain structs: serializing them cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn field<T: Serialize + ?Sized>(out: &mut String, name: &str, v: &T) {
    out.push_str(&format!("  {}: {},\n", compact(name), compact(v)));
}

fn rows<T: Serialize>(out: &mut String, name: &str, items: &[T]) {
    if items.is_empty() {
        out.push_str(&format!("  {}: [],\n", compact(name)));
        return;
    }
    out.push_str(&format!("  {}: [\n", compact(name)));
    for (i, item) in items.iter().enumerate() {
        out.push_str("    ");
        out.push_str(&compact(item));
        out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ],\n");
}
