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
    let mut last = serde_json::Value::Null;
    let start = std::time::Instant::now();
    while !(last["running"] == 2 && last["assigned"] == 4) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never 2 running and 4 assigned: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let st: serde_json::Value =
            serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
        last = st[0]["counts"].clone();
    }
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

/// Regression (issue 13, item 7): `range` items count from 1 and task
/// indices from 0, so `logs last/sim/3` showed item 4. A task is named by
/// its item too (`RUN/JOB@ITEM`), the item stands beside the index in `why`
/// and `analyze`, and an index past the end says how to name the item.
#[test]
fn tasks_are_named_by_index_or_item_and_show_both() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "items.yaml",
        r#"
workflow: items
jobs:
  - name: sim
    range: "1..=5"
    command: [sh, -c, "echo item {{ item }}; test {{ item }} -ne 4"]
  - name: scen
    foreach: [ssp1, ssp2]
    command: [echo, "{{ item }}"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(b.ok(&["logs", &format!("{run}/sim@4")]), "item 4\n");
    assert_eq!(b.ok(&["logs", &format!("{run}/sim/3")]), "item 4\n");
    assert_eq!(b.ok(&["logs", "last/scen@ssp2"]), "ssp2\n");
    let why = b.ok(&["why", &format!("{run}/sim@4")]);
    assert!(
        why.starts_with(&format!("{run}/sim/3 (item 4, failed): ")),
        "{why}"
    );
    let why: serde_json::Value =
        serde_json::from_str(&b.ok(&["why", "last/scen/1", "--json"])).unwrap();
    assert_eq!(why["item"], "ssp2");
    let analyze = stdout(&b.cli(&["analyze", &run]));
    assert!(
        analyze.contains(&format!("*****Failed task {run}/sim/3 (item 4)*****")),
        "{analyze}"
    );
    let out = b.cli(&["logs", &format!("{run}/sim/5")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: job sim of run {run} has 5 tasks: index 0 is item 1, index 4 is item 5: no index 5 (indices count from 0) (hint: {run}/sim@5 names the task of item 5)"
        )
    );
    let out = b.cli(&["why", &format!("{run}/scen@ssp9")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no item \"ssp9\""),
        "{}",
        stderr(&out)
    );
}

/// Regression (issue 13, item 6): failures came without their numbers: a
/// task that exited 2 on a missing file showed `"exit_code": null`, and
/// MEMORY_EXHAUSTION and TIMEOUT said neither the limit and peak nor the
/// walltime. `analyze` (text and JSON) and `logs` say them now.
#[test]
fn failures_carry_their_numbers() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "3", "--memory", "2G"]);
    b.wait_agents(1);
    let wf = b.write(
        "numbers.yaml",
        r#"
workflow: numbers
jobs:
  - name: input
    command: [sh, -c, "ls /no-such-file-here"]
  - name: slow
    command: [sleep, "30"]
    walltime: 1s
  - name: hog
    command: [python3, -c, "x = bytearray(400 * 1024 * 1024); import time; time.sleep(20)"]
    resources: {memory: 100M}
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&b.cli(&["analyze", &run, "--json"]))).unwrap();
    let task = |job: &str| -> serde_json::Value {
        v["failed_tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["path"] == format!("{run}/{job}/0"))
            .unwrap_or_else(|| panic!("no failed {job}: {v}"))
            .clone()
    };
    let input = task("input");
    assert_eq!(input["attempts"][0]["class"], "INVALID_INPUT", "{input}");
    assert_eq!(input["attempts"][0]["exit_code"], 2, "{input}");
    assert!(
        input["reason"].as_str().unwrap().ends_with("(exit code 2)"),
        "{input}"
    );
    let slow = task("slow");
    assert_eq!(slow["attempts"][0]["class"], "TIMEOUT", "{slow}");
    assert_eq!(slow["attempts"][0]["walltime_ms"], 1000, "{slow}");
    assert_eq!(slow["reason"], "timeout: walltime 1 sec", "{slow}");
    let hog = task("hog");
    let attempt = &hog["attempts"][0];
    assert_eq!(attempt["class"], "MEMORY_EXHAUSTION", "{hog}");
    // The agent's limit is the request times its margin (1.2).
    assert_eq!(attempt["memory_limit_bytes"], 125_829_120, "{hog}");
    let peak = attempt["peak_rss_bytes"].as_u64().unwrap();
    assert!(peak > 100 << 20, "the peak that broke the limit: {hog}");
    assert!(
        hog["reason"]
            .as_str()
            .unwrap()
            .starts_with("memory exhaustion: peak "),
        "{hog}"
    );
    let text = stdout(&b.cli(&["analyze", &run]));
    assert!(
        text.contains("attempt 1: INVALID_INPUT exit 2 on agent"),
        "{text}"
    );
    assert!(
        text.contains("attempt 1: TIMEOUT walltime 1 sec on agent"),
        "{text}"
    );
    assert!(text.contains(", limit 120M on agent"), "{text}");
    let logs = b.cli(&["logs", &format!("{run}/hog/0")]);
    let note = stderr(&logs);
    assert!(
        note.starts_with(&format!(
            "note: {run}/hog/0 attempt 1 ended MEMORY_EXHAUSTION peak "
        )) && note.trim_end().ends_with(", limit 120M"),
        "{note}"
    );
}

/// Regression (issue 13, item 6): `why` on a task cancelled because its
/// dependency failed pointed to `analyze`, which listed only failed tasks.
/// Both name it now, with the failure that caused it.
#[test]
fn a_task_cancelled_by_a_failed_dependency_is_named_with_the_failure() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "dep.yaml",
        r#"
workflow: dep
jobs:
  - name: bad
    range: "1..=2"
    command: [sh, -c, "exit {{ item }}"]
  - name: post
    after: [bad]
    range: "1..=3"
    command: ["true"]
  - name: slow
    command: [sleep, "60"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    // While the run still runs, its summary counts the cancelled tasks too.
    let mut v = serde_json::Value::Null;
    wait_until(Duration::from_secs(20), "post cancelled", || {
        v = serde_json::from_str(&stdout(&b.cli(&["analyze", &run, "--json"]))).unwrap();
        v["cancelled_jobs"]
            .as_array()
            .is_some_and(|j| !j.is_empty())
    });
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["cancelled"], 3, "{v}");
    b.ok(&["cancel", &run]);
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let why = b.ok(&["why", &format!("{run}/post@2")]);
    assert!(
        why.starts_with(&format!(
            "{run}/post/1 (item 2, cancelled): it was cancelled because its dependency bad failed (task {run}/bad/"
        )) && (why.trim_end().ends_with(": exit code 1)")
            || why.trim_end().ends_with(": exit code 2)")),
        "{why}"
    );
    let text = stdout(&b.cli(&["analyze", &run]));
    assert!(
        text.contains(&format!(
            "*****Cancelled tasks of job post: 3*****\ncause   : cancelled because its dependency bad failed (task {run}/bad/"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tasks   : {run}/post/0 (item 1), {run}/post/1 (item 2), {run}/post/2 (item 3)\n"
        )),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&b.cli(&["analyze", &run, "--json"]))).unwrap();
    let cancelled = &v["cancelled_jobs"][0];
    assert_eq!(cancelled["job"], "post", "{v}");
    assert_eq!(cancelled["tasks"], 3, "{v}");
    assert_eq!(cancelled["cause"]["dependency_failed"]["job"], "bad", "{v}");
    assert_eq!(v["cancelled_jobs"][1]["job"], "slow", "{v}");
    assert_eq!(v["cancelled_jobs"][1]["cause"], "by_user", "{v}");
}

/// Regression (issue 13, item 5): tasks that can never run made `submit
/// --wait` print `0/N done` forever; only `why` knew. `submit` warns at once
/// with the reason and a hint, and the progress line says what blocks the
/// run: a tag no agent has, a request larger than every agent, an image and
/// no container runtime.
#[test]
fn a_run_that_can_never_start_says_why_at_once() {
    let mut b = Broker::start();
    b.agent(&[
        "--cpus",
        "2",
        "--memory",
        "1G",
        "--tags",
        "cpu",
        "--runtime",
        "none",
    ]);
    b.wait_agents(1);
    let out = b.cli(&[
        "submit", "--tag", "demeter", "--array", "1-3", "--name", "sim", "--", "true",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let run = stdout(&out).trim().to_string();
    assert_eq!(
        stderr(&out),
        "warning: job sim (3 tasks) cannot start: no connected agent has tag demeter (hint: start an agent with --tags demeter, or a broker whose target serves demeter)\n"
    );
    let err = stderr_within(b.cli_command(&["wait", &run]), Duration::from_secs(2));
    assert_eq!(
        err.lines().next().unwrap_or_default(),
        format!("run {run}: 0/3 done (succeeded 0, failed 0, running 0); 3 blocked: no connected agent has tag demeter"),
        "{err}"
    );
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
    assert_eq!(
        st[0]["blocked"][0]["reason"]["no_agent_with_tag"]["tag"],
        "demeter"
    );
    assert_eq!(st[0]["blocked"][0]["tasks"], 3);

    let out = b.cli(&[
        "--json", "submit", "--tag", "cpu", "--memory", "64G", "--", "true",
    ]);
    let warning: serde_json::Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(
        warning["warning"],
        "job true (1 task) cannot start: needs 64G memory, largest agent has 1G"
    );
    assert_eq!(
        warning["hint"],
        "lower the request, or start an agent with more memory"
    );

    let manifest = b.write(
        "scalable.yaml",
        "version: 1\nproject: {name: t}\ntargets:\n  laptop: {provider: local, max_workers: 1, tags: [cpu]}\ncomponents:\n  cpu: {image: \"localhost/busybox:local\", cpus: 1}\ntasks:\n  boxed: {component: cpu}\n",
    );
    let wf = b.write(
        "boxed.yaml",
        "workflow: boxed\njobs:\n  - name: b\n    task: boxed\n    command: [\"true\"]\n",
    );
    let out = b.cli(&["submit", &wf, "--manifest", &manifest]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("warning: job b (1 task) cannot start: needs a container image, and no agent that serves it has a container runtime (hint: "),
        "{}",
        stderr(&out)
    );
    // Work that can run says nothing.
    let out = b.cli(&["submit", "--tag", "cpu", "--", "true"]);
    assert_eq!(stderr(&out), "");
}

/// Regression (issue 13, item 5): `submit --target local` accepted a
/// workflow that target cannot run. It is refused with exit 2 (SPEC §4, §7:
/// bad input, nothing stored), naming the job, what it asks and what the
/// target offers; `--target` without `--manifest` is refused too.
#[test]
fn submit_to_a_target_refuses_what_the_target_cannot_run() {
    let b = Broker::start();
    let manifest = b.write(
        "scalable.yaml",
        "version: 1\nproject: {name: t}\ntargets:\n  local: {provider: local, max_workers: 2, threads_per_worker: 1, tags: [postprocess]}\n",
    );
    let out = b.cli(&[
        "submit",
        "--manifest",
        &manifest,
        "--target",
        "local",
        "--tag",
        "demeter",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: -: jobs[0].tag: job true has tag demeter, and the agents of target local serve only tags postprocess (hint: give the job one of those tags, or submit to a target that serves it)\n"
    );
    let out = b.cli(&["submit", "--target", "local", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--target local needs --manifest FILE"),
        "{}",
        stderr(&out)
    );
    // An overlay without the manifest it belongs to was dropped in silence.
    let out = b.cli(&["submit", "--overlay", "auto", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--overlay auto needs --manifest FILE"),
        "{}",
        stderr(&out)
    );
    let runs: serde_json::Value = serde_json::from_str(&b.ok(&["status", "--json"])).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 0, "nothing stored");
    b.ok(&[
        "submit",
        "--manifest",
        &manifest,
        "--target",
        "local",
        "--tag",
        "postprocess",
        "--",
        "true",
    ]);
}
