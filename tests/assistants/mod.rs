//! The assistants of SPEC §12 (issue 19) through the real `scalable` CLI:
//! heuristic outputs snapshot-tested on the Demeter example and a small
//! Python project (`tests/fixtures/cropsim`), bad input, `compose`'s table
//! ([`compose`]), `diagnose` on a run with injected failures ([`diagnose`]),
//! and the LLM path against a local HTTP stub ([`llm`]).

mod compose;
mod diagnose;
mod llm;

use std::path::Path;
use std::process::Output;

use crate::snapshot::{assert_snapshot, repo_root};
use crate::support::*;

/// Runs `scalable ARGS` in `dir` with no broker and no AI backend (plus `env`).
pub fn assist(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(cli_exe());
    cmd.args(args)
        .env_remove("SCALABLE_ACCESS")
        .env_remove("SCALABLE_AI_BACKEND")
        .env_remove("AI_API_KEY")
        .env_remove("AI_BASE_URL")
        .env_remove("AI_MODEL")
        .env_remove("OLLAMA_HOST")
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run scalable")
}

/// `scalable validate FILE --json`: the resolved manifest, or a panic with
/// the errors.
pub fn validated(dir: &Path, file: &str) -> serde_json::Value {
    let out = assist(dir, &["--json", "validate", file], &[]);
    assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn transcript(dir: &Path, runs: &[&[&str]]) -> String {
    let mut t = String::new();
    for args in runs {
        let out = assist(dir, args, &[]);
        t.push_str(&format!(
            "$ scalable {}\n{}{}[exit {}]\n",
            args.join(" "),
            stdout(&out),
            stderr(&out),
            out.status.code().unwrap_or(-1)
        ));
    }
    t
}

/// Every heuristic output on the Demeter example and the Python fixture,
/// exactly, and each manifest it printed validates.
#[test]
fn heuristic_outputs_on_demeter_and_a_python_project_are_stable() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let demeter = "Demeter LULCC pipeline that downscales GCAM scenarios in parallel (4 CPUs, 16GB RAM, containerized) followed by NetCDF aggregation (2 CPUs, 8GB). Needs local and AWS targets with adaptive scaling.";
    let runs: &[&[&str]] = &[
        &["init-component", "examples/demeter-mini", "--name", "demeter", "--no-ai"],
        &["init-component", "tests/fixtures/cropsim", "--name", "cropsim", "--no-ai"],
        &["explain", "examples/demeter/scalable.yaml", "--target", "aws"],
        &["explain", "examples/demeter/scalable.yaml", "--target", "hpc"],
        &["explain", "examples/demeter-mini/scalable.yaml", "--target", "local"],
        &["compose", "--description", demeter],
        &["compose", "--description", "cropsim ensemble of 200 scenarios (2 cpus, 4GB, image ghcr.io/example-lab/cropsim:0.3.1) on slurm queue short with 3 retries and caching"],
        &["migrate", "examples/demeter/scalable.yaml", "--from", "slurm", "--to", "kubernetes"],
        &["migrate", "examples/demeter-mini/scalable.yaml", "--from", "aws", "--to", "gcp"],
    ];
    let text = transcript(&root, runs);
    assert_snapshot("assistants-heuristic.txt", &text);
    // What each printed validates (written out and checked by `validate`).
    for (i, args) in runs.iter().enumerate() {
        let out = assist(&root, args, &[]);
        let body = stdout(&out);
        let file = format!("out{i}.yaml");
        if args[0] == "init-component" {
            let frag = format!(
                "version: 1\nproject: {{name: p}}\ntargets: {{local: {{provider: local}}}}\n{body}"
            );
            std::fs::write(dir.path().join(&file), frag).unwrap();
        } else if args[0] != "explain" {
            std::fs::write(dir.path().join(&file), body).unwrap();
        } else {
            continue;
        }
        validated(dir.path(), &file);
    }
}

/// Bad input is one line and exit 2: a PATH that is not a directory, an
/// unknown provider, an empty description, an unknown backend; an unknown run
/// is the broker's one line.
#[test]
fn bad_input_is_one_line_and_exit_2() {
    let root = repo_root();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "init-component",
                "examples/demeter/scalable.yaml",
                "--name",
                "x",
            ],
            "error: init-component: examples/demeter/scalable.yaml: not a directory",
        ),
        (
            &["init-component", "no/such/dir", "--name", "x"],
            "error: init-component: no/such/dir: not a directory",
        ),
        (
            &[
                "migrate",
                "examples/demeter/scalable.yaml",
                "--from",
                "slurm",
                "--to",
                "nomad",
            ],
            "error: migrate: --to \"nomad\" is not a provider",
        ),
        (
            &[
                "migrate",
                "examples/demeter/scalable.yaml",
                "--from",
                "gcp",
                "--to",
                "aws",
            ],
            "error: examples/demeter/scalable.yaml: no target of the manifest has provider gcp",
        ),
        (
            &["compose", "--description", "  "],
            "error: compose: --description is empty",
        ),
        (
            &[
                "explain",
                "examples/demeter/scalable.yaml",
                "--target",
                "moon",
            ],
            "error: ",
        ),
    ];
    for (args, start) in cases {
        let out = assist(&root, args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(start), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let out = assist(
        &root,
        &["compose", "--description", "a pipeline"],
        &[("SCALABLE_AI_BACKEND", "gpt-5")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("valid: none, openai, ollama"),
        "{}",
        stderr(&out)
    );

    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    let out = b.cli(&["diagnose", "--run", "999"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no run 999"), "{err}");
}
