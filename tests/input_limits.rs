//! Hostile input is refused promptly with exit 2 and one line (what, where,
//! hint), and a template that is costly for one task fails that task without
//! stalling the broker (issue 12, defects 2 and 6).

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs the CLI with `args` in the broker's work dir; a run that outlives
/// `limit` is killed and fails the test (the old code hung or read forever).
fn cli_within(b: &Broker, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(cli_exe())
        .arg("--access")
        .arg(b.access())
        .args(args)
        .current_dir(b.work())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scalable");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("scalable {args:?} still running after {limit:?}; stderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit 2 and exactly one `error:` line on stderr; returns that line.
fn one_line_exit_2(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err.trim_end().to_string()
}

fn runs_stored(b: &Broker) -> i64 {
    b.db()
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap()
}

const PROMPT: Duration = Duration::from_secs(20);

/// Regression (defect 6): `validate /dev/zero` read until the OOM killer and a
/// FIFO hung it; both are refused unread, for manifests and workflows alike.
#[test]
fn devices_and_fifos_are_refused_unread() {
    let b = Broker::start();
    let fifo = b.work().join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    for args in [
        vec!["validate", "/dev/zero"],
        vec!["validate", fifo],
        vec!["submit", "/dev/zero"],
        vec!["submit", fifo],
        vec!["submit", "--manifest", "/dev/zero", "--", "true"],
    ] {
        let line = one_line_exit_2(&cli_within(&b, &args, PROMPT));
        assert!(line.contains("not a regular file"), "{args:?}: {line}");
        assert!(
            line.contains("(hint: give the path of a regular file)"),
            "{line}"
        );
    }
    assert_eq!(runs_stored(&b), 0);
}

/// Files over the limit are refused from their size, before any parsing.
#[test]
fn oversized_files_are_refused_with_size_and_limit() {
    let b = Broker::start();
    let big = b.work().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    // Sparse: the size is what counts, nothing needs to be written.
    f.set_len((64 << 20) + 1).unwrap();
    let big = big.to_str().unwrap();
    let line = one_line_exit_2(&cli_within(&b, &["submit", big], PROMPT));
    assert!(
        line.contains("file is 67108865 bytes, more than the limit of 67108864"),
        "{line}"
    );
    let line = one_line_exit_2(&cli_within(&b, &["validate", big], PROMPT));
    assert!(
        line.contains("file is 67108865 bytes, more than the limit of 8388608"),
        "{line}"
    );
}

/// Regression (defect 2): a costly template in every task made `submit` hang
/// without output; each shape now fails the submit check within its budget.
#[test]
fn submit_refuses_costly_templates_promptly() {
    let b = Broker::start();
    let shapes = [
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}\
         {% endfor %}{% endfor %}{% endfor %}",
        "{{ 'x' * 50000000 }}",
        "{% for a in range(100000) %}{{ range(100000) | join(',') }}{% endfor %}",
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}\
         {{ f(40) }}",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let wf = b.write(
            &format!("costly{i}.yaml"),
            &format!(
                "workflow: costly\njobs:\n  - name: j\n    range: \"1..=5\"\n    command: [echo, {}]\n",
                serde_json::to_string(shape).unwrap()
            ),
        );
        let line = one_line_exit_2(&cli_within(&b, &["submit", &wf], PROMPT));
        assert!(line.contains(&format!("costly{i}.yaml:5:")), "{line}");
        assert!(line.contains("jobs[0].command[1]"), "{line}");
        assert!(
            line.contains("template exceeds its budget of 100000 steps")
                || line.contains("template output exceeds 1048576 bytes"),
            "{line}"
        );
        assert!(line.contains("for task 0 (item 1)"), "{line}");
        assert!(
            line.contains("(a task's template must stay small"),
            "{line}"
        );
    }
    assert_eq!(runs_stored(&b), 0);
}

/// Regression (defect 2): a template costly only for a middle item passes the
/// submit check and used to stall the broker's core for hours; that task now
/// fails with the budget as its reason, the others run, and `status` answers.
#[test]
fn a_costly_middle_task_fails_alone_and_the_broker_keeps_answering() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    let wf = b.write(
        "middle.yaml",
        r#"
workflow: middle
jobs:
  - name: j
    range: "1..=3"
    command: [echo, "{% if item == 2 %}{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}{% endif %}{{ item }}"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let out = cli_within(&b, &["wait", &run], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let started = Instant::now();
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["status", &run, "--json"])).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(st[0]["counts"]["succeeded"], 2, "{st}");
    assert_eq!(st[0]["counts"]["failed"], 1, "{st}");
    let text = stdout(&b.cli(&["analyze", &run]));
    assert!(text.contains(&format!("{run}/j/1")), "{text}");
    assert!(
        text.contains("template exceeds its budget of 100000 steps"),
        "{text}"
    );
}

/// Regression (defect 6): a workflow that validates but encodes past the
/// message cap exited 3 (broker unreachable); it is bad input, exit 2, with
/// the size and the cap, and nothing is sent.
#[test]
fn a_workflow_over_the_message_cap_exits_2_with_size_and_cap() {
    let b = Broker::start();
    let arg = "a".repeat(1 << 20);
    let args: Vec<&str> = std::iter::repeat_n(arg.as_str(), 17).collect();
    let wf = b.write(
        "huge.yaml",
        &format!(
            "workflow: huge\njobs:\n  - name: j\n    command: {}\n",
            serde_json::to_string(&args).unwrap()
        ),
    );
    let line = one_line_exit_2(&cli_within(&b, &["submit", &wf], Duration::from_secs(60)));
    assert!(line.contains("the workflow encodes to "), "{line}");
    assert!(
        line.contains("more than the message cap of 16777216"),
        "{line}"
    );
    assert!(line.contains("(hint: "), "{line}");
    assert_eq!(runs_stored(&b), 0);
}

/// Regression (defect 6): a workflow name with a newline forged a line in
/// `status`; it is refused at submit like a bad job name.
#[test]
fn a_workflow_name_with_control_characters_is_refused() {
    let b = Broker::start();
    let wf = b.write(
        "forged.yaml",
        "workflow: \"w\\nrun 9 forged: succeeded\"\njobs:\n  - {name: a, command: [\"true\"]}\n",
    );
    let line = one_line_exit_2(&cli_within(&b, &["submit", &wf], PROMPT));
    assert!(
        line.starts_with("error: forged.yaml:1:11: workflow: invalid workflow name"),
        "{line}"
    );
    let line = one_line_exit_2(&cli_within(
        &b,
        &["submit", "--name", &"n".repeat(129), "--", "true"],
        PROMPT,
    ));
    assert!(
        line.contains("name is longer than 128 characters"),
        "{line}"
    );
    assert_eq!(runs_stored(&b), 0);
}
