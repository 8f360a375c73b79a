//! The runnable example (issue 13, item 10): `examples/demeter-mini`, the
//! seeds' Demeter manifest with a stand-in model sized for a laptop. Its
//! four targets validate and render (snapshots of what each would submit),
//! and its workflow runs end to end on the local target's agents.

use std::path::Path;

use crate::snapshot::{assert_snapshot, repo_root};
use crate::support::*;

fn example_dir() -> std::path::PathBuf {
    repo_root().join("examples/demeter-mini")
}

/// `scalable ARGS` in the example's directory, no broker: (code, stdout, stderr).
fn cli_here(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(cli_exe())
        .args(args)
        .env_remove("SCALABLE_ACCESS")
        .env_remove("ECR_DEMETER_IMAGE")
        .env_remove("DEMETER_SUBNET")
        .current_dir(example_dir())
        .output()
        .expect("run scalable");
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Machine paths out of rendered text: the agent binary, the example's
/// directory (where the placeholder state dir's pilots would live).
fn redact(text: &str) -> String {
    redact_agent(text).replace(&example_dir().display().to_string(), "[EXAMPLE]")
}

#[test]
fn every_target_of_the_example_validates_and_renders() {
    assert_eq!(cli_here(&["validate", "scalable.yaml"]).1, "ok\n");
    let mut shown = String::new();
    for target in ["local", "hpc", "aws", "k8s"] {
        let (code, out, err) = cli_here(&["validate", "scalable.yaml", "--target", target]);
        assert_eq!((code, out.as_str()), (Some(0), "ok\n"), "{target}: {err}");
        for extra in [&[][..], &["--commands"]] {
            let mut args = vec!["render", "scalable.yaml", "--target", target];
            args.extend_from_slice(extra);
            let (code, out, err) = cli_here(&args);
            assert_eq!(code, Some(0), "{args:?}: {err}");
            shown.push_str(&format!("$ scalable {}\n{}", args.join(" "), redact(&out)));
        }
    }
    let (code, out, _) = cli_here(&["plan", "scalable.yaml", "--target", "hpc"]);
    assert_eq!(code, Some(0));
    shown.push_str(&format!(
        "$ scalable plan scalable.yaml --target hpc\n{out}"
    ));
    assert_snapshot("demeter-mini-render.txt", &shown);
}

/// Copies the example (not its outputs) into `dest`.
fn copy_example(from: &Path, dest: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let skip = ["out", "summary.csv", "__pycache__", ".scalable"];
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let to = dest.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            copy_example(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

#[test]
fn the_example_runs_end_to_end_on_its_local_target() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(&example_dir(), dir.path());
    let manifest = dir.path().join("scalable.yaml");
    let b = Broker::start_with(&[
        "--manifest",
        manifest.to_str().unwrap(),
        "--target",
        "local",
    ]);
    copy_example(&example_dir(), &b.work());
    b.wait_agents(2);
    let out = b.cli(&[
        "submit",
        "--manifest",
        "scalable.yaml",
        "workflow.yaml",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    assert_eq!(
        stderr(&out).lines().last(),
        Some("run 1 succeeded: 6 succeeded, 0 failed, 0 cancelled of 6")
    );
    let summary = std::fs::read_to_string(b.work().join("summary.csv")).unwrap();
    let scenarios: Vec<&str> = summary
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        ["ssp1_0p5", "ssp2_0p5", "ssp3_0p5", "ssp4_0p5", "ssp5_0p5"]
    );
    // The stand-in is deterministic per scenario: the summary is fixed text.
    assert_snapshot("demeter-mini-summary.csv", &summary);
}
