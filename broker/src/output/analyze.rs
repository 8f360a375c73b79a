//! `scalable analyze`: pegasus-analyzer's summary of a run, then each failed
//! task with its reason, command, attempts and the tail of its output.
//!
//! Must not: decide the exit code (the command does, from the counts).

use scalable_common::protocol::{
    CancelledJob, FailedAttempt, FailedTask, RunAnalysis, TaskTransfer,
};
use scalable_common::quote::shell_join;
use scalable_common::units::{format_duration_ms, format_size};

use super::escape::printable;
use super::table::{percent, secs3};
use super::task_name::task_label;
use super::transfers;
use super::why::cancelled_because;

/// Lines of a failed task's stderr (or stdout) that `analyze` shows.
pub const ANALYZE_TAIL_LINES_MAX: usize = 20;

/// `scalable analyze`: pegasus-analyzer's summary, then every failed task with
/// its reason, command, attempts and the last lines of its output.
pub fn analyze_text(a: &RunAnalysis) -> String {
    let mut out = format!(
        "run {} ({}): {}\n\n*****Summary*****\n",
        a.run,
        printable(&a.name),
        a.state
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

    transfers::waiting_into(&a.transfers, a.transfers_unlisted, &mut out);
    let Some(first) = a.failed_tasks.first() else {
        out.push_str("\nno failed tasks\n");
        cancelled_jobs_into(&a.cancelled_jobs, &mut out);
        return out;
    };
    for task in &a.failed_tasks {
        out.push('\n');
        let transfer = a
            .transfers
            .iter()
            .find(|t| t.task == task.task && t.error.is_some());
        failed_task_into(task, transfer, &mut out);
    }
    cancelled_jobs_into(&a.cancelled_jobs, &mut out);
    out.push_str(&format!(
        "\nhint: scalable logs {} --stderr prints the whole stderr\n",
        printable(&first.path)
    ));
    out
}

/// Each job with cancelled tasks: how many, why, and the first of them.
fn cancelled_jobs_into(jobs: &[CancelledJob], out: &mut String) {
    for j in jobs {
        out.push_str(&format!(
            "\n*****Cancelled tasks of job {}: {}*****\n",
            printable(&j.job),
            j.tasks
        ));
        let cause = match &j.cause {
            Some(c) => format!("cancelled {}", cancelled_because(c)),
            None => "not recorded".into(),
        };
        out.push_str(&format!("cause   : {cause}\n"));
        let mut names: Vec<String> = j
            .first
            .iter()
            .map(|t| task_label(&t.path, t.item.as_deref()))
            .collect();
        let more = j.tasks.saturating_sub(j.first.len() as u64);
        if more > 0 {
            names.push(format!("and {more} more"));
        }
        out.push_str(&format!("tasks   : {}\n", names.join(", ")));
    }
}

/// A failed task's block; `transfer`: the one its last attempt failed on.
fn failed_task_into(t: &FailedTask, transfer: Option<&TaskTransfer>, out: &mut String) {
    out.push_str(&format!(
        "*****Failed task {}*****\n",
        task_label(&t.path, t.item.as_deref())
    ));
    out.push_str(&format!("task id : {}\n", t.task));
    out.push_str(&format!("state   : {}\n", t.state));
    out.push_str(&format!("reason  : {}\n", printable(&t.reason)));
    if let Some(transfer) = transfer {
        out.push_str(&transfers::failed_line(transfer));
        out.push('\n');
    }
    out.push_str(&format!("argv    : {}\n", printable(&shell_join(&t.argv))));
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
        let line = printable(line.trim_end());
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!("  {line}\n"));
        }
    }
}

/// The class of an attempt's end and the numbers that explain it:
/// `EXIT_CODE exit 3`, `INVALID_INPUT exit 2`, `MEMORY_EXHAUSTION peak 130M,
/// limit 120M`, `TIMEOUT walltime 10 secs`.
pub(super) fn ending_words(a: &FailedAttempt) -> String {
    let mut words = printable(&a.class).into_owned();
    if let Some(code) = a.exit_code {
        words.push_str(&format!(" exit {code}"));
    }
    match a.class.as_str() {
        "MEMORY_EXHAUSTION" => {
            words.push_str(&format!(" peak {}", format_size(a.peak_rss_bytes)));
            if let Some(limit) = a.memory_limit_bytes {
                words.push_str(&format!(", limit {}", format_size(limit)));
            }
        }
        "TIMEOUT" => {
            if let Some(w) = a.walltime_ms {
                words.push_str(&format!(" walltime {}", format_duration_ms(w)));
            }
        }
        _ => {}
    }
    words
}

/// `attempt 1: EXIT_CODE exit 3 on agent a1 (node01) after 0.120 s - detail`.
fn attempt_line(a: &FailedAttempt) -> String {
    let mut line = format!("attempt {}: {}", a.attempt_number, ending_words(a));
    if !a.agent.is_empty() {
        line.push_str(&format!(" on agent {}", printable(&a.agent)));
        if !a.host.is_empty() {
            line.push_str(&format!(" ({})", printable(&a.host)));
        }
    }
    line.push_str(&format!(" after {} s", secs3(a.duration_ms)));
    let detail = a.detail.trim();
    if !detail.is_empty() {
        line.push_str(&format!(" - {}", printable(detail)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cancelled_jobs: vec![],
            next: None,
            transfers: vec![],
            transfers_unlisted: 0,
            failed_tasks: vec![
                FailedTask {
                    task: 42,
                    path: "3/simulate/7".into(),
                    item: Some("8".into()),
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
                            peak_rss_bytes: 0,
                            memory_limit_bytes: None,
                            walltime_ms: None,
                        },
                        FailedAttempt {
                            attempt_number: 2,
                            class: "TIMEOUT".into(),
                            exit_code: None,
                            detail: "walltime 10 secs".into(),
                            agent: "a2".into(),
                            host: "node02".into(),
                            duration_ms: 10_000,
                            peak_rss_bytes: 0,
                            memory_limit_bytes: None,
                            walltime_ms: None,
                        },
                    ],
                    stderr_tail: stderr,
                    stdout_tail: "ignored\n".into(),
                },
                FailedTask {
                    task: 43,
                    path: "3/postprocess/0".into(),
                    item: None,
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

*****Failed task 3/simulate/7 (item 8)*****
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

    /// Issue 13, item 6: a failure says its numbers: the exit code of a task
    /// classed otherwise, the memory peak against the limit, the walltime.
    #[test]
    fn attempts_show_their_numbers() {
        let base = FailedAttempt {
            attempt_number: 1,
            class: "MEMORY_EXHAUSTION".into(),
            exit_code: None,
            detail: "".into(),
            agent: "a1".into(),
            host: "h".into(),
            duration_ms: 500,
            peak_rss_bytes: 130 << 20,
            memory_limit_bytes: Some(120 << 20),
            walltime_ms: Some(10_000),
        };
        assert_eq!(
            attempt_line(&base),
            "attempt 1: MEMORY_EXHAUSTION peak 130M, limit 120M on agent a1 (h) after 0.500 s"
        );
        let timeout = FailedAttempt {
            class: "TIMEOUT".into(),
            ..base.clone()
        };
        assert_eq!(
            attempt_line(&timeout),
            "attempt 1: TIMEOUT walltime 10 secs on agent a1 (h) after 0.500 s"
        );
        let invalid = FailedAttempt {
            class: "INVALID_INPUT".into(),
            exit_code: Some(2),
            detail: "missing input: x.csv".into(),
            ..base
        };
        assert_eq!(
            attempt_line(&invalid),
            "attempt 1: INVALID_INPUT exit 2 on agent a1 (h) after 0.500 s - missing input: x.csv"
        );
    }

    /// Issue 13, item 6: tasks cancelled because a dependency failed are
    /// named with the failure that caused it.
    #[test]
    fn cancelled_jobs_are_named_with_their_cause() {
        use scalable_common::explain::Cancellation;
        use scalable_common::protocol::TaskName;
        let mut a = analysis();
        a.failed_tasks.clear();
        a.cancelled_jobs = vec![
            CancelledJob {
                job: "post".into(),
                tasks: 12,
                first: vec![
                    TaskName {
                        path: "3/post/0".into(),
                        item: Some("1".into()),
                    },
                    TaskName {
                        path: "3/post/1".into(),
                        item: Some("2".into()),
                    },
                ],
                cause: Some(Cancellation::DependencyFailed {
                    job: "simulate".into(),
                    task: "3/simulate/7".into(),
                    item: Some("8".into()),
                    failure: "exit code 3".into(),
                }),
            },
            CancelledJob {
                job: "old".into(),
                tasks: 1,
                first: vec![TaskName {
                    path: "3/old/0".into(),
                    item: None,
                }],
                cause: None,
            },
        ];
        let text = analyze_text(&a);
        assert!(
            text.ends_with(
                "\nno failed tasks

*****Cancelled tasks of job post: 12*****
cause   : cancelled because its dependency simulate failed (task 3/simulate/7, item 8: exit code 3)
tasks   : 3/post/0 (item 1), 3/post/1 (item 2), and 10 more

*****Cancelled tasks of job old: 1*****
cause   : not recorded
tasks   : 3/old/0
"
            ),
            "{text}"
        );
    }

    #[test]
    fn stored_text_with_control_characters_is_escaped() {
        let mut a = analysis();
        a.name = "w\u{1b}]0;owned\u{7}".into();
        let t = &mut a.failed_tasks[0];
        t.stderr_tail = "ok\n\u{1b}[31mred\u{1b}[0m\r\nlast\n".into();
        t.reason = "x\ny".into();
        t.attempts[0].host = "node\n01".into();
        let text = analyze_text(&a);
        assert!(!text.contains(['\r', '\u{1b}', '\u{7}']), "{text}");
        assert!(
            text.starts_with("run 3 (w\\u{1b}]0;owned\\u{7}): failed"),
            "{text}"
        );
        assert!(text.contains("reason  : x\\ny\n"), "{text}");
        assert!(text.contains("(node\\n01)"), "{text}");
        assert!(text.contains("  \\u{1b}[31mred\\u{1b}[0m\n"), "{text}");
    }
}
