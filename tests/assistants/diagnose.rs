//! `diagnose` on a real run with injected failures: a memory kill, a
//! walltime, a missing input, a non-zero exit and a lost agent each get
//! their class; the proposed `fix-oom` overlay validates and, applied, makes
//! the killed task pass on a rerun.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const MANIFEST: &str = r#"
version: 1
project: {name: diag}
targets:
  local: {provider: local, max_workers: 1}
components:
  hog: {cpus: 1, memory: 64M}
tasks:
  run_hog: {component: hog, retries: 0}
"#;

const WORKFLOW: &str = r#"
workflow: injected
jobs:
  - name: hog
    task: run_hog
    command: [python3, -c, "x = bytearray(120 * 1024 * 1024); import time; time.sleep(3)"]
  - name: slow
    tag: main
    walltime: 1s
    command: [sleep, "30"]
  - name: input
    tag: main
    inputs: [no-such-input.csv]
    command: [cat, no-such-input.csv]
  - name: exit
    tag: main
    command: [sh, -c, "echo 'model diverged at step 42' >&2; exit 3"]
  - name: lost
    tag: lossy
    command: [sh, -c, "touch lost.$SCALABLE_ATTEMPT; if [ $SCALABLE_ATTEMPT = 1 ]; then exec sleep 60; fi"]
"#;

const HOG_ONLY: &str = r#"
workflow: rerun
jobs:
  - name: hog
    task: run_hog
    command: [python3, -c, "x = bytearray(120 * 1024 * 1024); import time; time.sleep(3)"]
"#;

#[test]
fn diagnose_names_each_injected_failure_and_its_overlay_fixes_the_memory_kill() {
    let mut b = Broker::start_with(&["--heartbeat-timeout", "2", "--heartbeat-interval-ms", "500"]);
    b.agent(&[
        "--cpus", "4", "--memory", "2G", "--tags", "main,hog", "--name", "main",
    ]);
    b.agent(&["--cpus", "1", "--tags", "lossy", "--name", "lossy-1"]);
    b.wait_agents(2);
    let (manifest, run) = injected_run(&mut b);

    let out = b.cli(&[
        "diagnose",
        "--run",
        &run,
        "--format",
        "json",
        "--manifest",
        &manifest,
        "--no-ai",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let d = &v["diagnosis"];
    let class_of = |job: &str| -> Vec<String> {
        d["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["job"] == job)
            .map(|f| f["class"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(class_of("hog"), ["MEMORY_EXHAUSTION"], "{d:#}");
    assert_eq!(class_of("slow"), ["TIMEOUT"], "{d:#}");
    assert_eq!(class_of("input"), ["INVALID_INPUT"], "{d:#}");
    assert_eq!(class_of("exit"), ["EXIT_CODE"], "{d:#}");
    assert_eq!(class_of("lost"), ["AGENT_LOST"], "{d:#}");
    let causes = d["causes"].as_array().unwrap();
    let oom = causes
        .iter()
        .find(|c| c["class"] == "MEMORY_EXHAUSTION")
        .unwrap_or_else(|| panic!("no memory cause: {d:#}"));
    assert_eq!(oom["tasks"][0], format!("{run}/hog/0"), "{oom:#}");
    assert!(oom["shared"].to_string().contains("tag hog"), "{oom:#}");
    assert!(oom["numbers"].to_string().contains("limit"), "{oom:#}");
    let exit = causes.iter().find(|c| c["class"] == "EXIT_CODE").unwrap();
    assert!(
        exit["evidence"]
            .as_str()
            .unwrap()
            .contains("model diverged"),
        "{exit:#}"
    );
    let fix = &oom["fix"];
    assert_eq!(fix["name"], "fix-oom", "{oom:#}");
    assert!(
        fix["validated"]
            .as_str()
            .unwrap()
            .starts_with("validated against --manifest"),
        "{fix:#}"
    );
    let overlay = fix["yaml"].as_str().unwrap();
    assert!(
        overlay.contains("components:\n      hog:\n        memory: "),
        "{overlay}"
    );

    applied_overlay_passes(&b, overlay);
    text_and_minimal_forms(&b, &run, &manifest);
}

/// A component image that does not exist: podman fails before the command
/// runs, and `diagnose` names it `IMAGE_ERROR`, not the bare exit code.
/// Needs the container testbed (scripts/container-testbed.sh start; .ci/run
/// starts it); fails, never skips, without podman.
#[test]
fn diagnose_names_a_bad_image() {
    let podman = std::process::Command::new("podman")
        .arg("--version")
        .output();
    assert!(
        podman.is_ok_and(|o| o.status.success()),
        "podman is missing: run scripts/container-testbed.sh start"
    );
    let mut b = Broker::start();
    b.agent(&["--cpus", "1", "--tags", "boxed", "--runtime", "podman"]);
    b.wait_agents(1);
    let manifest = b.write(
        "scalable.yaml",
        "version: 1\nproject: {name: img}\ntargets:\n  local: {provider: local, max_workers: 1}\ncomponents:\n  boxed: {image: \"localhost/scalable-no-such-image:1\", cpus: 1}\ntasks:\n  run_boxed: {component: boxed, retries: 0}\n",
    );
    let wf = b.write(
        "boxed.yaml",
        "workflow: boxed\njobs:\n  - name: b\n    task: run_boxed\n    command: [\"true\"]\n",
    );
    let out = b.cli(&["submit", "--manifest", &manifest, &wf, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = b.cli(&["--json", "diagnose", "--run", "last"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let classes: Vec<&str> = v["diagnosis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["IMAGE_ERROR"], "{v:#}");
    let cause = &v["diagnosis"]["causes"][0];
    assert!(
        cause["recommendation"].as_str().unwrap().contains("image"),
        "{cause:#}"
    );
}

/// Submits the injected failures and waits for the run to end: the lossy
/// agent is killed while its task runs and a second one finishes it.
fn injected_run(b: &mut Broker) -> (String, String) {
    let manifest = b.write("scalable.yaml", MANIFEST);
    let wf = b.write("injected.yaml", WORKFLOW);
    let run = b
        .ok(&["submit", "--manifest", &manifest, &wf])
        .trim()
        .to_string();
    crate::telemetry::finish_without_the_lossy_agent(b, &run, Duration::from_secs(90));
    (manifest, run)
}

/// The overlay as printed, pasted into the manifest, validates and makes
/// the killed task pass on a rerun.
fn applied_overlay_passes(b: &Broker, overlay: &str) {
    // Applied as printed, the overlay makes the killed task pass.
    let fixed = b.write("fixed.yaml", &format!("{MANIFEST}{overlay}"));
    let v = b.ok(&["--json", "validate", &fixed, "--overlay", "fix-oom"]);
    assert!(v.contains("\"memory_bytes\""), "{v}");
    let rerun = b.write("rerun.yaml", HOG_ONLY);
    let out = b.cli(&[
        "submit",
        "--manifest",
        &fixed,
        "--overlay",
        "fix-oom",
        &rerun,
        "--wait",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The text form names each class and prints the fix; without --manifest
/// the overlay is checked against a minimal manifest.
fn text_and_minimal_forms(b: &Broker, run: &str, manifest: &str) {
    // The text form names each class and prints the fix.
    let text = stdout(&b.cli(&["diagnose", "--run", run, "--manifest", manifest]));
    for class in [
        "MEMORY_EXHAUSTION",
        "TIMEOUT",
        "INVALID_INPUT",
        "EXIT_CODE",
        "AGENT_LOST",
    ] {
        assert!(text.contains(class), "{class}: {text}");
    }
    assert!(
        text.contains("Suggested Fixes:") && text.contains("fix-oom"),
        "{text}"
    );
    // Without --manifest the overlay is checked against a minimal manifest.
    let v: Value =
        serde_json::from_str(&stdout(&b.cli(&["--json", "diagnose", "--run", run]))).unwrap();
    let oom = v["diagnosis"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "MEMORY_EXHAUSTION")
        .cloned()
        .unwrap();
    assert!(
        oom["fix"]["validated"]
            .as_str()
            .unwrap()
            .contains("minimal manifest"),
        "{oom:#}"
    );
}
