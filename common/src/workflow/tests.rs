//! Tests of parsing and checking workflows: every error text a user can see
//! is asserted here whole.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match parse_workflow("wf.yaml", text) {
        Ok(def) => panic!("expected errors, got {def:?}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

const FULL: &str = r#"workflow: demeter-ssp
max_fails: 10
jobs:
  - name: downscale
    task: run_demeter_scenario
    command: [python, -m, demeter, --scenario, "{{ item }}", 7]
    foreach: [ssp1, ssp2, 3, 4.5, true]
    inputs: ["data/{{ item }}.csv"]
    outputs: ["out/{{ item }}.nc"]
    tag: postprocess
    resources: {cpus: 2, memory: 8G, gpus: 1, custom: {licence: 1}}
    retries: 2
    walltime: "02:00:00"
    priority: 10
    env: {A: b, N: 4, R: "{{ run_id }}"}
    workdir: "runs/{{ index }}"
    features: {size_mb: "{{ item }}", scenario: ssp1}
    max_running: 4
    max_fails: 3
    cache: true
  - name: aggregate
    resources: {memory: 1073741824}
    walltime: 90
    command: [python, aggregate.py]
    after: downscale
  - name: sweep
    command: [sim, "--seed={{ item + 1 }}"]
    range: "0..10"
    after: [downscale, aggregate]
"#;

#[test]
fn full_example_parses() {
    let def = parse_workflow("wf.yaml", FULL).unwrap();
    assert_eq!(def.name, "demeter-ssp");
    assert_eq!(def.max_fails, Some(10));
    let d = &def.jobs[0];
    assert_eq!(d.name, "downscale");
    assert_eq!(d.task.as_deref(), Some("run_demeter_scenario"));
    assert_eq!(
        d.command,
        ["python", "-m", "demeter", "--scenario", "{{ item }}", "7"]
    );
    assert_eq!(
        d.items,
        Items::List(vec![
            Item::Str("ssp1".into()),
            Item::Str("ssp2".into()),
            Item::Int(3),
            Item::Float(4.5),
            Item::Bool(true),
        ])
    );
    assert_eq!(d.inputs, ["data/{{ item }}.csv"]);
    assert_eq!(d.outputs, ["out/{{ item }}.nc"]);
    assert_eq!(d.tag.as_deref(), Some("postprocess"));
    assert_eq!(
        d.resources,
        ResourceRequest {
            cpus: Some(2),
            memory_bytes: Some(8 << 30),
            gpus: Some(1),
            custom: vec![("licence".into(), 1)],
        }
    );
    assert_eq!(d.retries, 2);
    assert_eq!(d.walltime_ms, Some(2 * 3600 * 1000));
    assert_eq!(d.priority, 10);
    assert_eq!(
        d.env,
        vec![
            ("A".to_string(), "b".to_string()),
            ("N".to_string(), "4".to_string()),
            ("R".to_string(), "{{ run_id }}".to_string()),
        ]
    );
    assert_eq!(d.workdir.as_deref(), Some("runs/{{ index }}"));
    assert_eq!(
        d.features,
        vec![
            ("size_mb".to_string(), "{{ item }}".to_string()),
            ("scenario".to_string(), "ssp1".to_string()),
        ]
    );
    assert_eq!(d.max_running, Some(4));
    assert_eq!(d.max_fails, Some(3));
    assert!(d.cache);
    assert!(d.after.is_empty());

    let a = &def.jobs[1];
    assert_eq!(a.after, ["downscale"]);
    assert_eq!(a.items, Items::One);
    assert_eq!(a.resources.memory_bytes, Some(1 << 30));
    assert_eq!(a.walltime_ms, Some(90_000));
    assert_eq!(a.retries, 0);
    assert!(!a.cache);

    let s = &def.jobs[2];
    assert_eq!(s.items, Items::Range { start: 0, end: 9 });
    assert_eq!(s.after, ["downscale", "aggregate"]);
    assert_eq!(def.task_count(), 5 + 1 + 10);

    // What the broker does with it.
    let t = JobTemplates::compile(d).unwrap();
    assert_eq!(
        t.argv(d, 3, 12).unwrap(),
        ["python", "-m", "demeter", "--scenario", "4.5", "7"]
    );
    assert_eq!(
        t.env(d, 0, 12).unwrap()[2],
        ("R".to_string(), "12".to_string())
    );
    let t = JobTemplates::compile(s).unwrap();
    assert_eq!(t.argv(s, 9, 1).unwrap(), ["sim", "--seed=10"]);

    // A parsed definition passes the standalone check too.
    validate(&def, "wf.yaml").unwrap();
}

#[test]
fn unknown_key_has_a_hint() {
    assert_eq!(
        one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    retrys: 3\n"),
        "wf.yaml:5:5: jobs[0].retrys: unknown key \"retrys\" (did you mean \"retries\"?)"
    );
    let e =
        one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    resources: {zzz: 1}\n");
    assert_eq!(
        e,
        "wf.yaml:5:17: jobs[0].resources.zzz: unknown key \"zzz\" \
             (valid keys: cpus, memory, gpus, custom)"
    );
    let e = one_error("workflow: w\njbos: []\n");
    assert_eq!(
        e,
        "wf.yaml:2:1: jbos: unknown key \"jbos\" (did you mean \"jobs\"?)"
    );
}

#[test]
fn duplicate_key_is_an_error() {
    assert_eq!(
        one_error("workflow: w\njobs:\n  - name: a\n    name: b\n    command: [x]\n"),
        "wf.yaml:4:5: jobs[0]: duplicate key \"name\" (each key may appear once)"
    );
    let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    env: {A: 1, A: 2}\n");
    assert!(
        e.starts_with("wf.yaml:5:17: jobs[0].env: duplicate key \"A\""),
        "{e}"
    );
}

#[test]
fn type_errors_point_at_the_value() {
    let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    retries: abc\n");
    assert_eq!(
        e,
        "wf.yaml:5:14: jobs[0].retries: expected a whole number from 0 to 4294967295"
    );
    let e = one_error("workflow: w\njobs:\n  - name: [a]\n    command: [x]\n");
    assert!(e.starts_with("wf.yaml:3:11: jobs[0].name: "), "{e}");
    let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x, null]\n");
    assert!(e.starts_with("wf.yaml:4:18: jobs[0].command[1]: "), "{e}");
    let e = one_error("workflow: w\njobs:\n  - command: [x]\n");
    assert_eq!(e, "wf.yaml:3:5: jobs[0]: missing key \"name\"");
    let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    foreach: [[1]]\n");
    assert!(e.starts_with("wf.yaml:5:15: jobs[0].foreach[0]: "), "{e}");
    let e = one_error("workflow: w\njobs: [\n");
    assert!(e.starts_with("wf.yaml:"), "{e}");
    assert_eq!(
        one_error(" \n"),
        "wf.yaml: workflow file is empty (start with `workflow: NAME` and a list of `jobs`)"
    );
    let e = one_error("workflow: w\njobs:\n  - name: a\n    command: x\n");
    assert_eq!(e, "wf.yaml:4:14: jobs[0].command: expected a list");
}

#[test]
fn bad_size_and_duration() {
    let e = errors(
            "workflow: w\njobs:\n  - name: a\n    command: [x]\n    resources: {memory: 8X}\n    walltime: soon\n",
        );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("wf.yaml:5:25: jobs[0].resources.memory: invalid size \"8X\""),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("wf.yaml:6:15: jobs[0].walltime: invalid duration \"soon\""),
        "{e:#?}"
    );
}

#[test]
fn cycle_is_printed() {
    let text = "workflow: w\njobs:\n  - name: a\n    command: [x]\n    after: [b]\n  - name: b\n    command: [x]\n    after: [c]\n  - name: c\n    command: [x]\n    after: [a]\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:5:13: jobs[0].after[0]: cycle: a -> b -> c -> a \
             (remove one of these after entries)"
    );
    // Two separate cycles and a job that only depends on one: two errors.
    let mut def = parse_workflow("w", "workflow: w\njobs:\n  - {name: x, command: [x]}\n").unwrap();
    let job = |n: &str, after: &[&str]| JobDef {
        after: after.iter().map(|s| s.to_string()).collect(),
        ..quick_job(n, vec!["x".into()], Items::One)
    };
    def.jobs = vec![
        job("p", &["q"]),
        job("q", &["p"]),
        job("r", &["p", "s"]),
        job("s", &["t"]),
        job("t", &["s"]),
        job("u", &["u"]),
    ];
    let e = validate(&def, "net").unwrap_err().to_string();
    assert_eq!(
        e,
        "net: jobs[5].after[0]: job \"u\" cannot run after itself\n\
             net: jobs[0].after[0]: cycle: p -> q -> p (remove one of these after entries)\n\
             net: jobs[3].after[0]: cycle: s -> t -> s (remove one of these after entries)"
    );
}

#[test]
fn unknown_after_has_did_you_mean() {
    let text = "workflow: w\njobs:\n  - name: downscale\n    command: [x]\n  - name: b\n    command: [x]\n    after: [dowscale]\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:7:13: jobs[1].after[0]: unknown job \"dowscale\" (did you mean \"downscale\"?)"
    );
    let text = "workflow: w\njobs:\n  - name: downscale\n    command: [x]\n  - name: b\n    command: [x]\n    after: zzz\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:7:12: jobs[1].after[0]: unknown job \"zzz\" (jobs are: downscale, b)"
    );
}

#[test]
fn bad_templates() {
    let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item | nosuchfilter }}\"]\n    foreach: [a]\n";
    let e = one_error(text);
    assert!(
        e.starts_with(
            "wf.yaml:4:18: jobs[0].command[1]: bad template in job \"j\": unknown filter"
        ),
        "{e}"
    );
    let text = "workflow: w\njobs:\n  - name: j\n    command: [x]\n    outputs: [\"{{ undefined_var }}\"]\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:5:15: jobs[0].outputs[0]: bad template in job \"j\": \
             undefined variable \"undefined_var\" (templates know item, index and run_id)"
    );
    let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item }}\"]\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:4:18: jobs[0].command[1]: job \"j\" has no foreach or range, \
             so {{ item }} is undefined"
    );
    let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item\"]\n    env: {A: \"{% if %}\"}\n    range: 1..=3\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].contains("jobs[0].command[1]: bad template in job \"j\": syntax error"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("wf.yaml:5:14: jobs[0].env.A: bad template"),
        "{e:#?}"
    );
}

#[test]
fn range_forms() {
    assert_eq!(parse_range("1..=1000"), Ok((1, 1000)));
    assert_eq!(parse_range("0..10"), Ok((0, 9)));
    assert_eq!(parse_range(" 1-100 "), Ok((1, 100)));
    assert_eq!(parse_range("-5-5"), Ok((-5, 5)));
    assert_eq!(parse_range("-5..=-1"), Ok((-5, -1)));
    assert_eq!(parse_range("3..=3"), Ok((3, 3)));
    assert!(parse_range("3..3").unwrap_err().contains("is empty"));
    assert!(parse_range("5..=1")
        .unwrap_err()
        .contains("start 5 is after end 1"));
    assert!(parse_range("5")
        .unwrap_err()
        .starts_with("invalid range \"5\""));
    assert!(parse_range("a..b").is_err());
    assert!(parse_range("").is_err());
    assert_eq!(
        parse_range("-9223372036854775808..-9223372036854775807"),
        Ok((i64::MIN, i64::MIN))
    );

    let text = "workflow: w\njobs:\n  - name: j\n    command: [x]\n    range: 1..x\n";
    assert!(one_error(text).starts_with("wf.yaml:5:12: jobs[0].range: invalid range \"1..x\""));
    let text =
        "workflow: w\njobs:\n  - name: j\n    command: [x]\n    range: 1..=2\n    foreach: [a]\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:5:12: jobs[0].range: foreach and range are exclusive (keep one of them)"
    );
}

#[test]
fn all_semantic_errors_with_lines() {
    let text = "\
workflow: \"\"
jobs:
  - name: a b
    command: []
    retries: 101
    resources: {cpus: 0}
  - name: ok
    command: [x]
    foreach: []
    max_running: 0
  - name: ok
    command: [x]
";
    let e = errors(text);
    assert_eq!(
            e,
            [
                "wf.yaml:1:11: workflow: workflow name is empty",
                "wf.yaml:3:11: jobs[0].name: invalid job name \"a b\" (use letters, digits, \"_\", \".\" and \"-\")",
                "wf.yaml:4:14: jobs[0].command: command is empty (give the argv as a list, e.g. [python, run.py])",
                "wf.yaml:5:14: jobs[0].retries: retries 101 is more than the limit of 100",
                "wf.yaml:6:23: jobs[0].resources.cpus: cpus must be at least 1",
                "wf.yaml:9:14: jobs[1].foreach: foreach is empty",
                "wf.yaml:10:18: jobs[1].max_running: max_running must be at least 1 (leave it out for no limit)",
                "wf.yaml:11:11: jobs[2].name: duplicate job name \"ok\" (first defined at line 7)",
            ]
        );
    assert_eq!(
        one_error("workflow: w\njobs: []\n"),
        "wf.yaml:2:7: jobs: workflow has no jobs (add at least one job with a name and a command)"
    );
}

#[test]
fn million_task_range_is_one_job() {
    let text = "workflow: big\njobs:\n  - name: sweep\n    command: [sim, \"{{ item }}\"]\n    range: \"1..=1000000\"\n";
    let def = parse_workflow("wf.yaml", text).unwrap();
    assert_eq!(def.jobs.len(), 1);
    assert_eq!(
        def.jobs[0].items,
        Items::Range {
            start: 1,
            end: 1_000_000
        }
    );
    assert_eq!(def.task_count(), 1_000_000);

    let text =
        "workflow: big\njobs:\n  - name: sweep\n    command: [sim]\n    range: \"1..=10000001\"\n";
    assert_eq!(
        one_error(text),
        "wf.yaml:5:12: jobs[0].range: job \"sweep\" has 10000001 tasks, \
             more than the limit of 10000000 per run"
    );
    let text = "workflow: big\njobs:\n  - name: a\n    command: [sim]\n    range: \"1..=6000000\"\n  - name: b\n    command: [sim]\n    range: \"1..=6000000\"\n";
    assert!(one_error(text).contains("jobs: workflow has 12000000 tasks"));
}

#[test]
fn standalone_validate_has_paths_without_lines() {
    let mut job = quick_job(
        "",
        vec![],
        Items::Range {
            start: i64::MIN,
            end: i64::MAX,
        },
    );
    job.after = vec!["nope".into()];
    let def = WorkflowDef {
        name: "w".into(),
        max_fails: None,
        jobs: vec![job],
    };
    let e = validate(&def, "submitted").unwrap_err();
    let lines: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines[0], "submitted: jobs[0].name: job name is empty");
    assert_eq!(lines[1], "submitted: jobs[0].command: command is empty (give the argv as a list, e.g. [python, run.py])");
    assert!(
        lines[2].starts_with("submitted: jobs[0].range: job \"\" has 18446744073709551615 tasks")
    );
    assert_eq!(
        lines[3],
        "submitted: jobs[0].after[0]: unknown job \"nope\""
    );
    assert!(e.0.iter().all(|e| e.line == 0));
}

#[test]
fn quick_job_defaults() {
    let job = quick_job(
        "q",
        vec!["echo".into(), "{{ index }}".into()],
        Items::Range { start: 1, end: 100 },
    );
    assert_eq!(job.retries, 0);
    assert_eq!(job.priority, 0);
    assert!(job.after.is_empty() && job.env.is_empty() && job.tag.is_none());
    let def = WorkflowDef {
        name: "q".into(),
        max_fails: None,
        jobs: vec![job],
    };
    validate(&def, "cli").unwrap();
}

/// Regression (issue 12, defect 6): the workflow name took newlines, terminal
/// escapes and any length (a forged line in `status`); a tag too. Both are
/// checked like job names.
#[test]
fn workflow_name_and_tag_are_identifiers() {
    assert_eq!(
        one_error("workflow: \"w\\nrun 9 x: succeeded\"\njobs:\n  - {name: a, command: [x]}\n"),
        "wf.yaml:1:11: workflow: invalid workflow name \"w\\nrun 9 x: succeeded\" \
         (use letters, digits, \"_\", \".\" and \"-\")"
    );
    assert_eq!(
        one_error("workflow: \"w\\e[2J\"\njobs:\n  - {name: a, command: [x]}\n"),
        "wf.yaml:1:11: workflow: invalid workflow name \"w\\u{1b}[2J\" \
         (use letters, digits, \"_\", \".\" and \"-\")"
    );
    let long = "w".repeat(NAME_CHARS_MAX + 1);
    assert_eq!(
        one_error(&format!(
            "workflow: {long}\njobs:\n  - {{name: a, command: [x]}}\n"
        )),
        format!("wf.yaml:1:11: workflow: workflow name is longer than {NAME_CHARS_MAX} characters")
    );
    let ok = "w".repeat(NAME_CHARS_MAX);
    parse_workflow(
        "wf.yaml",
        &format!("workflow: {ok}\njobs:\n  - {{name: a, command: [x]}}\n"),
    )
    .unwrap();
    assert_eq!(
        one_error("workflow: w\njobs:\n  - {name: a, command: [x], tag: \"gpu\\r\"}\n"),
        "wf.yaml:3:5: jobs[0].tag: invalid tag name \"gpu\\r\" \
         (use letters, digits, \"_\", \".\" and \"-\")"
    );
}

/// One rule for numbers in workflows and manifests (issue 13): a quoted
/// number or boolean is a string, refused with the manifest's hint.
#[test]
fn quoted_numbers_and_booleans_are_refused_as_in_manifests() {
    let job =
        |line: &str| format!("workflow: w\njobs:\n  - name: a\n    command: [x]\n    {line}\n");
    assert_eq!(
        one_error(&job("retries: \"2\"")),
        "wf.yaml:5:14: jobs[0].retries: expected a whole number, got the string \"2\" (hint: write 2 without quotes)"
    );
    assert_eq!(
        one_error(&job("resources: {cpus: '4', memory: 1G}")),
        "wf.yaml:5:23: jobs[0].resources.cpus: expected a whole number, got the string \"4\" (hint: write 4 without quotes)"
    );
    assert_eq!(
        one_error(&job("cache: \"true\"")),
        "wf.yaml:5:12: jobs[0].cache: expected true or false, got the string \"true\" (hint: write true without quotes)"
    );
    for line in [
        "priority: \"-1\"",
        "max_running: \"3\"",
        "max_fails: \"1\"",
        "resources: {gpus: \"1\"}",
        "resources: {custom: {licence: \"1\"}}",
    ] {
        let e = one_error(&job(line));
        assert!(e.contains("without quotes"), "{line}: {e}");
    }
    // Plain numbers, and sizes that are strings by nature, still read.
    let text = job("resources: {cpus: 4, gpus: 0, memory: \"16G\", custom: {licence: 1}}");
    let def = parse_workflow("wf.yaml", &text).expect("valid");
    assert_eq!(def.jobs[0].resources.cpus, Some(4));
    assert_eq!(
        one_error(&job("retries: abc")),
        "wf.yaml:5:14: jobs[0].retries: expected a whole number from 0 to 4294967295"
    );
}

/// `checkpoint:` paths stay inside the task's directory, and tasks of one job
/// never share them (issue 20).
#[test]
fn checkpoint_paths_are_checked() {
    let ok = "workflow: w\njobs:\n  - {name: a, command: [x], checkpoint: [ckpt, state/n.txt]}\n";
    let def = parse_workflow("wf.yaml", ok).unwrap();
    assert_eq!(def.jobs[0].checkpoint, vec!["ckpt", "state/n.txt"]);
    let own = "workflow: w\njobs:\n  - {name: a, command: [x], range: \"1..=3\", workdir: \"r{{ item }}\", checkpoint: [ckpt]}\n";
    assert!(parse_workflow("wf.yaml", own).is_ok());
    let shared = own.replace("workdir: \"r{{ item }}\", ", "");
    assert_eq!(
        one_error(&shared),
        "wf.yaml:3:58: jobs[0].checkpoint: every task of job \"a\" would share these \
         checkpoint paths (give each task its own directory, e.g. workdir: \"run-{{ item }}\")"
    );
    let abs = ok.replace("ckpt, ", "/etc, ");
    assert!(one_error(&abs).contains("jobs[0].checkpoint[0]: checkpoint path must be relative"));
    let up = ok.replace("ckpt, ", "../x, ");
    assert!(one_error(&up).contains("must stay inside the task's directory"));
}
