//! The first hour of a newcomer (issue 13): the mistakes a new user makes and
//! what they see, snapshot-tested as plain text. The README's own commands
//! are run by `readme.rs`; the runnable example by `example.rs`.

use crate::support::*;

/// A broker's and its local agents' logs redirected to files carry no
/// terminal colour codes (issue 13, item 11).
#[test]
fn logs_off_a_terminal_carry_no_colour_codes() {
    let b = Broker::start_with(&["--local-agents", "1"]);
    b.wait_agents(1);
    let run = b.ok(&["submit", "--", "true"]).trim().to_string();
    b.ok(&["wait", &run]);
    let broker_log = b.log();
    let agent_log =
        std::fs::read_to_string(b.state().join("local-agents/agent-1.log")).unwrap_or_default();
    for (name, log) in [("broker", &broker_log), ("agent", &agent_log)] {
        assert!(log.contains("INFO"), "{name} log has lines: {log}");
        assert!(
            !log.contains('\u{1b}'),
            "{name} log has colour codes: {log:?}"
        );
    }
}

/// `scalable ARGS` with no broker, in `dir`: (exit code, stdout, stderr).
fn cli_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(cli_exe())
        .args(args)
        .env_remove("SCALABLE_ACCESS")
        .current_dir(dir)
        .output()
        .expect("run scalable");
    (out.status.code(), stdout(&out), stderr(&out))
}

/// A Fargate target without `subnet`: `validate --target aws` refuses it
/// with the very line `render --commands` gives (one code path), and
/// `validate` without a target checks every target (issue 13, item 10).
#[test]
fn validate_runs_the_provider_checks_render_needs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("scalable.yaml"),
        "version: 1\nproject: {name: p}\ntargets:\n  \
         local: {provider: local, max_workers: 1}\n  \
         aws: {provider: aws, region: us-east-1, cluster_type: fargate, image: agent:1}\n\
         components:\n  c: {cpus: 1, memory: 1G}\n",
    )
    .unwrap();
    let expected = "error: scalable.yaml: targets.aws.subnet: is required for Fargate tasks \
                    (awsvpc networking) (hint: add subnet: under targets.aws)\n";
    let render = cli_in(
        dir.path(),
        &["render", "scalable.yaml", "--target", "aws", "--commands"],
    );
    // After its note that the broker's address is a placeholder.
    let last = render.2.lines().last().unwrap_or_default().to_string() + "\n";
    assert_eq!((render.0, last.as_str()), (Some(2), expected));
    for args in [
        &["validate", "scalable.yaml", "--target", "aws"][..],
        &["validate", "scalable.yaml"],
    ] {
        let (code, out, err) = cli_in(dir.path(), args);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(2), "", expected));
    }
    let (code, out, _) = cli_in(
        dir.path(),
        &["validate", "scalable.yaml", "--target", "local"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"));
}

/// The mistakes a newcomer made in issue 13 and what each prints now, as
/// one transcript compared with `tests/snapshots/newcomer-mistakes.txt`:
/// the unquoted quick-submit template, commands and options from the
/// seeds' CLI, a quoted number, a Fargate target without a subnet, and
/// errors under `--json` (one object on stderr, the text's exit code).
#[test]
fn the_newcomer_mistakes_say_what_to_type() {
    let dir = tempfile::tempdir().unwrap();
    let example = crate::snapshot::repo_root().join("examples/demeter-mini/scalable.yaml");
    std::fs::copy(example, dir.path().join("scalable.yaml")).unwrap();
    std::fs::write(
        dir.path().join("nosubnet.yaml"),
        "version: 1\nproject: {name: p}\ntargets:\n  \
         aws: {provider: aws, region: us-east-1, cluster_type: fargate, image: agent:1}\n\
         components:\n  c: {cpus: 1, memory: 1G}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("quoted.yaml"),
        "workflow: q\njobs:\n  - name: a\n    command: [\"true\"]\n    retries: \"2\"\n",
    )
    .unwrap();
    let mistakes: &[&[&str]] = &[
        &[
            "submit", "--array", "1-100", "--", "./model", "{{", "index", "}}",
        ],
        &["diagnose", "--run", "last"],
        &[
            "plan",
            "scalable.yaml",
            "--target",
            "hpc",
            "--objective",
            "minimize cost",
        ],
        &["status", "--latest"],
        &["stauts"],
        &["submit", "quoted.yaml"],
        &["validate", "nosubnet.yaml", "--target", "aws"],
        &["--json", "validate", "nosubnet.yaml", "--target", "aws"],
        &["--json", "diagnose"],
        &["--json", "status"],
    ];
    let mut transcript = String::new();
    for args in mistakes {
        let (code, out, err) = cli_in(dir.path(), args);
        transcript.push_str(&format!(
            "$ scalable {}\n{out}{err}[exit {}]\n",
            args.join(" "),
            code.unwrap_or(-1)
        ));
        if args[0] == "--json" {
            let v: serde_json::Value = serde_json::from_str(&err).expect("one JSON object");
            assert!(v["error"].is_string() && v.get("hint").is_some(), "{err}");
        }
    }
    crate::snapshot::assert_snapshot("newcomer-mistakes.txt", &transcript);
}

/// `render --json` prints JSON (issue 13, item 11): the files, or the
/// command lines with `--commands`.
#[test]
fn render_json_is_json() {
    let dir = crate::snapshot::repo_root().join("examples/demeter-mini");
    let (code, out, err) = cli_in(
        &dir,
        &[
            "--json",
            "render",
            "scalable.yaml",
            "--target",
            "hpc",
            "--tag",
            "demeter",
        ],
    );
    assert_eq!((code, err.as_str()), (Some(0), ""));
    let v: serde_json::Value = serde_json::from_str(&out).expect("render --json");
    assert_eq!(v["files"][0]["name"], "agent.sbatch");
    let (_, out, _) = cli_in(
        &dir,
        &[
            "--json",
            "render",
            "scalable.yaml",
            "--target",
            "k8s",
            "--commands",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("render --json --commands");
    assert!(v["commands"][0]["command"]
        .as_str()
        .unwrap()
        .starts_with("kubectl"));
}
