//! The advisors end to end (issue 17): a synthetic workload owned by this
//! test, whose peak memory and run time follow a law of its input size with
//! noise, run through a real broker and agent; `scalable advise` trained on
//! what the attempts really used, checked against a held-out run.

use serde_json::Value;

use crate::snapshot::assert_snapshot;
use crate::support::*;

/// Peak memory ≈ (8 + 2·size) MiB and run time ≈ 0.05 + 0.003·size s, each
/// with ±5% noise drawn from the task id (plus the interpreter's own RSS).
const WORKLOAD: &str = r#"
import os, random, sys, time
s = int(sys.argv[1])
r = random.Random(int(os.environ["SCALABLE_TASK_ID"]))
noise = lambda: 1 + 0.05 * (2 * r.random() - 1)
x = bytearray(int((8 + 2 * s) * noise() * 2**20))
time.sleep((0.05 + 0.003 * s) * noise())
"#;

/// Sizes 10..=60 MB, different in every run.
const SIZE: &str = "{{ (index + index + run_id) % 51 + 10 }}";

fn workflow(b: &Broker) -> String {
    let wf = format!(
        "workflow: synth\njobs:\n  - name: synth\n    range: \"0..=39\"\n    features: {{size_mb: \"{SIZE}\"}}\n    command: [python3, -c, {}, \"{SIZE}\"]\n",
        serde_json::to_string(WORKLOAD).unwrap()
    );
    b.write("synth.yaml", &wf)
}

fn advise(b: &Broker, args: &[&str]) -> Value {
    let mut all = vec!["advise", "--task", "synth", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&b.ok(&all)).unwrap()
}

fn memory_bytes(a: &Value) -> f64 {
    a["evidence"]["memory_bytes"].as_f64().unwrap()
}

/// Numbers become 0 and strings "s": what stays is seed 003's shape.
fn shape(v: &Value) -> Value {
    match v {
        Value::Number(_) => Value::from(0),
        Value::String(_) => Value::from("s"),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_learned_advisor_sizes_held_out_tasks_tighter_than_the_percentile() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    let wf = workflow(&b);
    for _ in 0..3 {
        b.ok(&["submit", &wf, "--wait"]);
    }
    let thin = advise(&b, &["--features", "size_mb=30"]);
    assert_eq!(thin["method"], "quantile (fallback: 3 runs < 5)", "{thin}");
    assert_eq!(thin["model_type"], "quantile");
    for _ in 0..2 {
        b.ok(&["submit", &wf, "--wait"]);
    }
    let a = advise(&b, &["--features", "size_mb=30"]);
    assert_eq!(a["model_type"], "gradient_boosting", "{a}");
    assert_snapshot("advise-shape.json", &format!("{:#}\n", shape(&a)));
    let text = b.ok(&["advise", "--task", "synth", "--features", "size_mb=30"]);
    assert!(text.contains("cross-validation (5 folds)"), "{text}");
    let tuned: Value = serde_json::from_str(&b.ok(&[
        "tune",
        "--task",
        "synth",
        "--model-type",
        "linear",
        "--cv-folds",
        "3",
        "--json",
    ]))
    .unwrap();
    assert_eq!(tuned["cv_folds"], 3, "{tuned}");
    let stored = std::fs::read_to_string(b.state().join("advisor-params.json")).unwrap();
    assert!(stored.contains("\"linear\""), "{stored}");

    // Advice for every size the held-out run will have, asked before it runs.
    let bound = |size: i64| memory_bytes(&advise(&b, &["--features", &format!("size_mb={size}")]));
    let advised: Vec<f64> = (10..=60).map(bound).collect();
    let percentile = memory_bytes(&advise(&b, &[]));
    b.ok(&["submit", &wf, "--wait"]);
    let db = b.db();
    let mut stmt = db
        .prepare(
            "SELECT idx, peak_rss_bytes FROM attempts WHERE run_id = 6 AND end_class = 'SUCCESS'",
        )
        .unwrap();
    let held_out: Vec<(i64, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as f64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(held_out.len(), 40);
    let (mut covered, mut over, mut over_percentile) = (0, 0.0, 0.0);
    for (idx, peak) in &held_out {
        let size = (2 * idx + 6) % 51 + 10;
        let bound = advised[(size - 10) as usize];
        covered += usize::from(*peak <= bound);
        over += (bound - peak) / peak;
        over_percentile += (percentile - peak) / peak;
    }
    let n = held_out.len() as f64;
    let (coverage, over, over_percentile) = (covered as f64 / n, over / n, over_percentile / n);
    eprintln!("held out: coverage {coverage:.3}, over-allocation {over:.3} (percentile {over_percentile:.3})");
    assert!(coverage >= 0.95, "held-out coverage {coverage}");
    assert!(over <= 0.25, "mean over-allocation {over}");
    assert!(
        over < over_percentile,
        "{over} against the percentile's {over_percentile}"
    );

    // A feature no attempt had lowers the confidence.
    let seen = advise(&b, &["--features", "size_mb=30"]);
    let unseen = advise(&b, &["--features", "size_mb=30", "scenario=ssp9"]);
    assert!(
        unseen["confidence"].as_f64() < seen["confidence"].as_f64(),
        "{unseen} against {seen}"
    );
}

#[test]
fn bad_advise_input_is_one_line_and_exit_2() {
    let b = Broker::start();
    let cases: [(&[&str], &str); 4] = [
        (
            &["advise", "--task", "synth"],
            "no attempt of task \"synth\" has ended yet",
        ),
        (
            &["advise", "--task", "synth", "--features", "size_mb"],
            "expected K=V",
        ),
        (
            &["advise", "--task", "synth", "--model-type", "xgb"],
            "unknown model type",
        ),
        (
            &["tune", "--task", "synth", "--cv-folds", "1"],
            "--cv-folds 1",
        ),
    ];
    for (args, expected) in cases {
        let out = b.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}
