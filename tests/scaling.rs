//! The adaptive scaler on the local provider (issue 18): a target with
//! `adaptive: {minimum: 1, maximum: 6}` keeps one pilot, a burst of work
//! starts more (real agent processes through the provider), the work is
//! done, the idle pilots are drained back to the minimum after the cooldown,
//! and every stored decision has its reasoning and its outcome. The full
//! comparison with fixed pools is `scripts/bench.sh scaling`.

use std::time::Duration;

use crate::support::*;

const MANIFEST: &str = r#"version: 1
project: {name: scaling-it}
targets:
  lab:
    provider: local
    threads_per_worker: 1
    adaptive: {minimum: 1, maximum: 6, cooldown: 2s}
"#;

fn live_pilots(b: &Broker) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["pilots", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "ended" && p["state"] != "draining")
        .cloned()
        .collect()
}

/// Stops the agents of the broker's live pilots when the test ends, passed
/// or not: a pilot outlives its broker (to reconnect after a restart) until
/// its idle timeout.
struct StopPilots<'a>(&'a Broker);

impl Drop for StopPilots<'_> {
    fn drop(&mut self) {
        let Ok(db) = std::panic::catch_unwind(|| self.0.db()) else {
            return;
        };
        let Ok(mut q) = db.prepare("SELECT provider_id FROM pilots WHERE state != 'ended'") else {
            return;
        };
        let pids: Vec<String> = q
            .query_map([], |r| r.get(0))
            .map(|rows| rows.flatten().collect())
            .unwrap_or_default();
        for pid in pids.iter().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

#[test]
fn a_burst_scales_local_pilots_up_then_back_to_the_minimum_with_outcomes() {
    let m = std::env::temp_dir().join(format!("scalable-scaling-{}.yaml", std::process::id()));
    std::fs::write(&m, MANIFEST).unwrap();
    let b = Broker::start_with(&["--manifest", &m.to_string_lossy(), "--target", "lab"]);
    let _stop = StopPilots(&b);
    wait_until(Duration::from_secs(20), "the minimum's pilot", || {
        live_pilots(&b).iter().any(|p| p["state"] == "connected")
    });
    assert_eq!(live_pilots(&b).len(), 1, "the minimum, no more while idle");
    let run = b.ok(&[
        "submit", "--cpus", "1", "--array", "1-30", "--name", "burst", "--", "sleep", "1",
    ]);
    let run = run.trim().to_string();
    let mut most = 0;
    wait_until(Duration::from_secs(20), "a scale-up", || {
        most = most.max(live_pilots(&b).len());
        most > 1
    });
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(90));
    let out = out.expect("the run to finish");
    assert!(out.status.success(), "{}", stderr(&out));
    let agents: i64 = b
        .db()
        .query_row(
            "SELECT COUNT(DISTINCT agent_id) FROM attempts WHERE end_class = 'SUCCESS'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(agents > 1, "the burst ran on {agents} agent(s)");
    wait_until(Duration::from_secs(60), "the scale-down to 1", || {
        live_pilots(&b).len() == 1
    });
    check_decisions(&b);
    check_report(&b, &run);
    check_plan(&b, &m.to_string_lossy());
    check_drained_pilots_exited(&b);
    let _ = std::fs::remove_file(&m);
}

/// Every decision: reasoning, and an outcome (the starts': when their
/// pilots connected; all: busy and idle seconds and cost); sized to the
/// demand, not a pilot per task.
fn check_decisions(b: &Broker) {
    let db = b.db();
    wait_until(Duration::from_secs(30), "every decision's outcome", || {
        db.query_row(
            "SELECT COUNT(*) FROM scaling_decisions WHERE busy_s IS NULL OR idle_s IS NULL OR cost IS NULL
                OR (workers_to_add != '{}' AND pilots_connected_at_ms IS NULL)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 0
    });
    let listed: serde_json::Value = serde_json::from_str(&b.ok(&["scaling", "--json"])).unwrap();
    let decisions = listed.as_array().unwrap();
    let ups = decisions
        .iter()
        .filter(|d| {
            d["workers_to_add"]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        })
        .count();
    let downs = decisions
        .iter()
        .filter(|d| !d["drained"].as_array().unwrap().is_empty())
        .count();
    assert!(ups >= 2, "the minimum, then the burst: {listed:#}");
    assert!(downs >= 1, "{listed:#}");
    assert!(
        ups <= 4,
        "sized to the demand, not a pilot per task: {ups} starts"
    );
    for d in decisions {
        assert!(!d["reasoning"].as_str().unwrap().is_empty(), "{d}");
    }
}

/// The report draws desired against actual pilots and each pilot's wait.
fn check_report(b: &Broker, run: &str) {
    let html = b.work().join("report.html");
    b.ok(&[
        "report",
        run,
        "--format",
        "html",
        "--output",
        &html.to_string_lossy(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<title>Desired against actual pilots</title>"));
    assert!(page.contains("<title>Queue wait per pilot</title>"));
    assert!(page.contains("idle pilot-seconds"));
    let json: serde_json::Value =
        serde_json::from_str(&b.ok(&["report", run, "--format", "json"])).unwrap();
    let rows = json["scaling_decisions"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|d| d["after"].as_u64() > d["before"].as_u64()
                && d["busy_seconds"].as_f64() > Some(0.0)),
        "{rows:#?}"
    );
}

/// `plan` reads this broker's history: measured run times and queue waits.
fn check_plan(b: &Broker, manifest: &str) {
    let planned: serde_json::Value = serde_json::from_str(&b.ok(&[
        "plan",
        manifest,
        "--target",
        "lab",
        "--objective",
        "minimize time",
        "--policy",
        "aggressive",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(planned["history"], true, "{planned:#}");
    let g = &planned["groups"][0];
    assert_eq!(g["run_seconds_source"], "history", "{planned:#}");
    assert!(
        (0.9..3.0).contains(&g["run_seconds"].as_f64().unwrap()),
        "{g}"
    );
    assert_eq!(g["queue_wait_source"], "history");
    assert_eq!(
        g["workers"], 6,
        "minimize time: the maximum for a wave of 6"
    );
}

/// The drained pilots' records ended and their agents exited.
fn check_drained_pilots_exited(b: &Broker) {
    let mut v = serde_json::Value::Null;
    wait_until(Duration::from_secs(20), "the drained pilots to end", || {
        v = serde_json::from_str(&b.ok(&["pilots", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] != "draining")
    });
    let ended: Vec<i32> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "ended")
        .filter_map(|p| p["provider_id"].as_str()?.parse().ok())
        .collect();
    assert!(!ended.is_empty(), "{v:#}");
    for pid in ended {
        assert!(!process_alive(pid), "pilot process {pid} left behind");
    }
}

/// Running or sleeping; a zombie (this sandbox's init does not reap the
/// children of a broker that exited) has ended.
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn plan_names_the_valid_objectives_and_policies_and_prints_its_json_shape() {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/demeter/scalable.yaml"
    );
    let workflow = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/demeter/workflow.yaml"
    );
    let run = |args: &[&str]| {
        std::process::Command::new(cli_exe())
            .args(["plan", manifest, "--target", "aws"])
            .args(args)
            .env_remove("SCALABLE_ACCESS")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    };
    let out = run(&["--objective", "fastest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(r#"(valid: "minimize cost", "minimize time", "balance")"#),
        "{}",
        stderr(&out)
    );
    let out = run(&["--policy", "careful"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("(valid: safe, aggressive, manual)"));
    let out = run(&[
        "--objective",
        "balance",
        "--workflow",
        workflow,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in [
        "target",
        "provider",
        "objective",
        "policy",
        "workflow",
        "history",
        "groups",
        "predicted_makespan_seconds",
        "predicted_cost",
        "currency",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v:#}");
    }
    assert_eq!(
        (v["objective"].as_str(), v["policy"].as_str()),
        (Some("balance"), Some("safe"))
    );
    let g = &v["groups"][0];
    assert_eq!(
        (g["tag"].as_str(), g["tasks"].as_u64()),
        (Some("demeter"), Some(5))
    );
    assert!(g["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["chosen"] == true));
}
