//! `scalable status`: pegasus-status-like counts per job of each run.
//!
//! Must not: read a clock (times come from the broker's run records).

use scalable_common::protocol::{Counts, RunStatus};
use scalable_common::units::format_duration_ms;

use super::escape::printable;
use super::table::{percent, Align, Table};
use super::time::format_utc;

/// `scalable status`: per run a header and pegasus-status-like counts per job.
/// RUNNING counts tasks whose agent reported the process started; ASSIGNED
/// those sent to an agent and not started yet (queued there). A CACHED column
/// appears only when a run has cached tasks and a TAG column only when a job
/// has a tag.
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
            run.run,
            printable(&run.name),
            run.state
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
            ("ASSIGNED", Align::Right),
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
                c.assigned.to_string(),
                c.running.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_fixtures::{counts, run_status, SUBMITTED_MS};
    use scalable_common::protocol::JobStatus;

    #[test]
    fn status_snapshot() {
        let expected = r"run 3 demeter-ssp: running (submitted 2026-11-22 10:01:02 UTC)
JOB          WAITING  READY  ASSIGNED  RUNNING  SUCCEEDED  FAILED  CANCELLED  %DONE
prepare            0      0         0        0          1       0          0  100.0
simulate           0      2         1        7        988       2          0   99.0
postprocess        1      0         0        0          0       0          0    0.0
TOTAL              1      2         1        7        989       2          0   98.9
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
JOB    TAG  WAITING  READY  ASSIGNED  RUNNING  SUCCEEDED  FAILED  CANCELLED  CACHED  %DONE
fit    gpu        0      0         0        0          3       0          0       2  100.0
TOTAL             0      0         0        0          3       0          0       2  100.0
";
        assert_eq!(status_text(&[finished]), expected);
        assert_eq!(status_text(&[]), "no runs\n");
    }

    /// Regression (issue 12, defect 6): a workflow name stored with a newline
    /// and a terminal escape forged a line in `status`; it is escaped.
    #[test]
    fn stored_names_with_control_characters_are_escaped() {
        let mut run = run_status();
        run.name = "x\nrun 9 forged: succeeded\u{1b}[2J".into();
        run.jobs.truncate(1);
        run.jobs[0].name = "prep\rare".into();
        let text = status_text(&[run]);
        assert!(
            text.starts_with("run 3 x\\nrun 9 forged: succeeded\\u{1b}[2J: running"),
            "{text}"
        );
        assert!(text.contains("\nprep\\rare "), "{text}");
        assert!(!text.contains(['\r', '\u{1b}']), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
    }
}
