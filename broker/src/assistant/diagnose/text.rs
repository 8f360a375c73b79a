//! The words of a [`Diagnosis`](super::Diagnosis): the seed's report
//! (failures, root causes with tasks, evidence and recommendation, then
//! the suggested fixes). Must not: decide anything.

use std::fmt::Write as _;

use super::Diagnosis;

const RULE: &str = "═══════════════════════════════════════";
/// Tasks named per cause before "and N more".
const TASKS_SHOWN_MAX: usize = 5;

pub fn render(d: &Diagnosis) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{RULE}\nDiagnosis Report: run {} ({})\n{RULE}",
        d.run, d.run_name
    );
    let _ = writeln!(
        out,
        "Failures: {} of {} tasks ({} failed or lost attempts of {})",
        d.failed_tasks,
        d.tasks,
        d.findings.len(),
        d.attempts
    );
    if d.causes.is_empty() {
        out.push_str("\nNo failed or lost attempt: nothing to diagnose.\n");
        return out;
    }
    out.push_str("\nRoot Cause Analysis:\n────────────────────\n");
    for (i, c) in d.causes.iter().enumerate() {
        let n = c.attempts.len();
        let _ = writeln!(
            out,
            "{}. {} ({} attempt{}{})",
            i + 1,
            c.class,
            n,
            if n == 1 { "" } else { "s" },
            if c.job.is_empty() {
                String::new()
            } else {
                format!(", job {}", c.job)
            }
        );
        let shown: Vec<&str> = c
            .tasks
            .iter()
            .take(TASKS_SHOWN_MAX)
            .map(String::as_str)
            .collect();
        let more = c.tasks.len().saturating_sub(TASKS_SHOWN_MAX);
        let _ = writeln!(
            out,
            "   Tasks: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        let ids: Vec<String> = c.attempts.iter().take(10).map(|a| a.to_string()).collect();
        let _ = writeln!(out, "   Attempts: {}", ids.join(", "));
        let _ = writeln!(out, "   Evidence: {}", c.evidence);
        if !c.numbers.is_empty() {
            let _ = writeln!(out, "   Measured: {}", c.numbers.join("; "));
        }
        let _ = writeln!(out, "   Shared: {}", c.shared.join(", "));
        let _ = writeln!(out, "   Recommendation: {}", c.recommendation);
    }
    let fixes: Vec<_> = d.causes.iter().filter_map(|c| c.fix.as_ref()).collect();
    if !fixes.is_empty() {
        out.push_str("\nSuggested Fixes:\n────────────────\n");
        for f in fixes {
            let what = if f.kind == "overlay" {
                format!("overlay {} ({})", f.name, f.changes)
            } else {
                format!("workflow edit ({})", f.changes)
            };
            let _ = writeln!(out, "• {what}; {}:", f.validated);
            for line in f.yaml.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}
