//! `memory: auto` end to end (issue 17): a synthetic workload owned by this
//! test, whose peak memory follows the size of its declared input, runs five
//! times with a fixed request through a real broker and agent; then the
//! same workflow with `memory: auto` and `walltime: auto` (a manifest
//! overlay) gets a request per task from the learned advisor, tighter than
//! the fallback, with no memory kill; every attempt records where its
//! request came from and what was predicted, and the report holds them.

use serde_json::Value;

use crate::support::*;

/// Peak memory ≈ (8 + 2·kb) MiB where kb is its input's size in KB, and run
/// time ≈ 0.02 + 0.001·kb s; ±5% noise drawn from the task id.
const WORKLOAD: &str = r#"
import os, random, sys, time
kb = os.path.getsize(sys.argv[1]) // 1000
r = random.Random(int(os.environ["SCALABLE_TASK_ID"]))
noise = lambda: 1 + 0.05 * (2 * r.random() - 1)
x = bytearray(int((8 + 2 * kb) * noise() * 2**20))
time.sleep((0.02 + 0.001 * kb) * noise())
"#;

const TASKS: u64 = 24;
const FALLBACK_BYTES: i64 = 512 << 20;

const MANIFEST: &str = "version: 1
project: {name: synth}
targets:
  local: {provider: local}
components:
  synth: {cpus: 1, memory: 512M}
tasks:
  synth: {component: synth}
overlays:
  auto: {tasks: {synth: {memory: auto, walltime: auto}}}
";

/// Input sizes 10..=60 KB, different in every run: the only feature.
fn write_inputs(b: &Broker, run: u64) {
    let dir = b.work().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..TASKS {
        let kb = (2 * i + 3 * run) % 51 + 10;
        std::fs::write(
            dir.join(format!("{i}.dat")),
            vec![b'x'; (kb * 1000) as usize],
        )
        .unwrap();
    }
}

fn workflow(b: &Broker) -> String {
    let wf = format!(
        "workflow: synth\njobs:\n  - name: synth\n    task: synth\n    range: \"0..={}\"\n    inputs: [\"in/{{{{ index }}}}.dat\"]\n    command: [python3, -c, {}, \"in/{{{{ index }}}}.dat\"]\n",
        TASKS - 1,
        serde_json::to_string(WORKLOAD).unwrap()
    );
    b.write("synth.yaml", &wf)
}

/// One row per attempt of `run`: request source, memory asked, peak, end,
/// model, predicted memory, walltime-relevant predicted run time.
type Row = (
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn attempts(b: &Broker, run: u64) -> Vec<Row> {
    let db = b.db();
    let mut stmt = db
        .prepare(
            "SELECT request_source, memory_bytes, COALESCE(peak_rss_bytes, 0), end_class,
                    request_model, predicted_memory_bytes, predicted_run_time_ms
             FROM attempts WHERE run_id = ?1 ORDER BY id",
        )
        .unwrap();
    stmt.query_map([run as i64], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn memory_auto_sizes_each_task_tighter_than_its_fallback_without_a_kill() {
    let started = std::time::Instant::now();
    let mut b = Broker::start();
    b.agent(&["--cpus", "12"]);
    b.wait_agents(1);
    let wf = workflow(&b);
    let m = b.write("scalable.yaml", MANIFEST);
    for run in 1..=5 {
        write_inputs(&b, run);
        b.ok(&["submit", &wf, "--manifest", &m, "--wait"]);
    }
    eprintln!("five fixed runs in {:?}", started.elapsed());
    let fixed = attempts(&b, 5);
    assert!(fixed
        .iter()
        .all(|a| a.0 == "manifest" && a.1 == FALLBACK_BYTES && a.4.is_none()));

    write_inputs(&b, 6);
    b.ok(&[
        "submit",
        &wf,
        "--manifest",
        &m,
        "--overlay",
        "auto",
        "--wait",
    ]);
    eprintln!("the auto run done at {:?}", started.elapsed());
    let auto = attempts(&b, 6);
    assert_eq!(auto.len(), TASKS as usize, "one attempt each: no retry");
    let mut requests: Vec<i64> = auto.iter().map(|a| a.1).collect();
    for (source, asked, peak, end, model, predicted, run_time) in &auto {
        assert_eq!(source, "advisor", "{auto:?}");
        assert_eq!(end, "SUCCESS", "no memory kill: {auto:?}");
        assert!(*asked < FALLBACK_BYTES / 2, "{asked} against the fallback");
        assert!(*peak > 0);
        assert_eq!(model.as_deref(), Some("gradient_boosting"));
        assert!(
            predicted.is_some_and(|p| p <= *asked),
            "{predicted:?} {asked}"
        );
        assert!(run_time.is_some());
    }
    requests.sort();
    requests.dedup();
    assert!(requests.len() > 5, "a request per task: {requests:?}");
    let covered = auto.iter().filter(|a| a.2 <= a.1).count();
    let over: f64 = auto
        .iter()
        .map(|a| (a.1 - a.2) as f64 / a.2 as f64)
        .sum::<f64>()
        / auto.len() as f64;
    eprintln!(
        "auto run: {covered}/{} under their request, mean over-allocation {over:.3} (fallback {:.3})",
        auto.len(),
        auto.iter()
            .map(|a| (FALLBACK_BYTES - a.2) as f64 / a.2 as f64)
            .sum::<f64>()
            / auto.len() as f64
    );
    assert_report(&b);
}

fn assert_report(b: &Broker) {
    let export = b.ok(&["export", "last"]);
    let sized = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["table"] == "attempt" && v["request_model"] == "gradient_boosting")
        .filter(|v| v["predicted_memory_bytes"].as_u64().is_some())
        .count();
    assert_eq!(sized, TASKS as usize, "the export says how each was sized");
    let json: Value = serde_json::from_str(&b.ok(&["report", "last", "--format", "json"])).unwrap();
    let predictions = json["predictions"].as_array().unwrap();
    assert!(
        predictions.len() >= TASKS as usize,
        "{}",
        json["predictions"]
    );
    let acc = &json["accountability"];
    assert_eq!(acc["advised"]["attempts"], TASKS, "{acc}");
    assert!(acc["advised"]["coverage"].as_f64().unwrap() >= 0.9, "{acc}");
    assert!(
        acc["advised"]["over_allocation"].as_f64() < acc["percentile"]["over_allocation"].as_f64(),
        "{acc}"
    );
    let text = b.ok(&["report", "last"]);
    assert!(text.contains("Advisor, predicted against actual"), "{text}");
    let html = b.ok(&["report", "last", "--format", "html"]);
    assert!(
        html.contains("Predicted memory bound against measured peak"),
        "html"
    );
}
