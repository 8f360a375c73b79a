//! `scalable stats`: pegasus-statistics' summary of a run and its per-job
//! breakdown.
//!
//! Must not: compute statistics; the broker's store does, this only lays out.

use scalable_common::protocol::RunStats;
use scalable_common::units::format_duration_ms;

use super::escape::printable;
use super::table::{secs3, Align, Table};

/// Width of the rules in `stats`, unless its table is wider.
const RULE_WIDTH_MIN: usize = 60;

/// `scalable stats`: pegasus-statistics' summary table and wall times, then a
/// per-job breakdown with durations in seconds.
pub fn stats_text(s: &RunStats) -> String {
    let summary = summary_table(s).lines();
    let width = summary
        .iter()
        .map(|l| l.len())
        .max()
        .unwrap_or(0)
        .max(RULE_WIDTH_MIN);
    let rule = "-".repeat(width);

    let mut out = format!(
        "run {} ({}): {}\n{rule}\n",
        s.run,
        printable(&s.name),
        s.state
    );
    for line in &summary {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    facts_into(s, &mut out);
    if !s.jobs.is_empty() {
        out.push_str("\nPer job (times in seconds):\n");
        jobs_table(s).render_into(&mut out);
    }
    out
}

/// The one-row task summary; a Cached column only when tasks were cached.
fn summary_table(s: &RunStats) -> Table {
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
    summary
}

/// The wall times and attempt counts, one `label  : value` line each.
fn facts_into(s: &RunStats, out: &mut String) {
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
}

/// One row per job: counts, then durations in seconds.
fn jobs_table(s: &RunStats) -> Table {
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
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalable_common::protocol::JobStats;

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
}
