//! What a newcomer reads (issue 13, items 5-8), against a real broker and
//! agents: counts that mean what they say, tasks named by index or item,
//! failures with their numbers, and runs that say what blocks them.

use std::time::Duration;

use crate::support::*;

/// The value of `column` in the row of `job` of a `status` table.
fn status_cell(text: &str, job: &str, column: &str) -> u64 {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("JOB"));
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let at = header
        .iter()
        .position(|c| *c == column)
        .unwrap_or_else(|| panic!("no column {column} in {header:?}:\n{text}"));
    let row: Vec<&str> = lines
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no row {job}:\n{text}"))
        .split_whitespace()
        .collect();
    row[at].parse().unwrap()
}

/// Regression (issue 13, item 8): six tasks on a 2-cpu agent showed
/// "6 running"; running now means the agent reported the process started,
/// and tasks only sent to it are counted as assigned, in `status`, in the
/// progress line of `wait` and in JSON.
#[test]
fn running_counts_started_tasks_and_assigned_is_its_own_count() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let run = b
        .ok(&[
            "submit", "--array", "1-6", "--name", "sim", "--", "sleep", "30",
        ])
        .trim()
        .to_string();
    wait_until(Duration::from_secs(20), "2 running, 4 assigned", || {
        let st: serde_json::Value =
            serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
        st[0]["counts"]["running"] == 2 && st[0]["counts"]["assigned"] == 4
    });
    let text = b.ok(&["status", &run]);
    assert_eq!(status_cell(&text, "sim", "RUNNING"), 2, "{text}");
    assert_eq!(status_cell(&text, "sim", "ASSIGNED"), 4, "{text}");
    // Off a terminal `wait` prints a plain progress line at once.
    let err = stderr_within(b.cli_command(&["wait", &run]), Duration::from_secs(2));
    let line = err.lines().next().unwrap_or_default();
    assert_eq!(
        line,
        format!("run {run}: 0/6 done (succeeded 0, failed 0, running 2, assigned 4)"),
        "{err}"
    );
    b.ok(&["cancel", &run]);
}

/// What `cmd` wrote to stderr in `limit` (it is killed then, if still running).
fn stderr_within(mut cmd: std::process::Command, limit: Duration) -> String {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a command");
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for a command");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
