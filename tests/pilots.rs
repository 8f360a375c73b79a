//! The broker's pilot records and `scale` through the local provider (agent
//! processes on this host): fast, no batch system. Slurm's real run is in
//! `slurm.rs`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const MANIFEST: &str = r#"version: 1
project: {name: pilots-it}
targets:
  lab:
    provider: local
    max_workers: 1
    threads_per_worker: 1
"#;

fn pilots(b: &Broker) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&b.ok(&["pilots", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn scale_records_matches_and_reconciles_local_pilots() {
    let m = std::env::temp_dir().join(format!("scalable-pilots-{}.yaml", std::process::id()));
    std::fs::write(&m, MANIFEST).unwrap();
    let mut b = Broker::start_with(&["--manifest", &m.to_string_lossy(), "--target", "lab"]);
    b.wait_agents(1); // the target's own local agent (not a pilot)
    let dry: serde_json::Value =
        serde_json::from_str(&b.ok(&["scale", "--target", "lab", "+2", "--dry-run", "--json"]))
            .unwrap();
    assert_eq!(
        (dry["before"].as_u64(), dry["after"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(pilots(&b).is_empty(), "a dry run starts nothing");
    let up: serde_json::Value =
        serde_json::from_str(&b.ok(&["scale", "--target", "lab", "=1", "--json"])).unwrap();
    assert_eq!(up["started"].as_array().unwrap().len(), 1, "{up}");
    wait_until(
        Duration::from_secs(20),
        "the pilot's agent to connect",
        || {
            pilots(&b)
                .first()
                .is_some_and(|p| p["state"] == "connected")
        },
    );
    // An agent that claims a pilot id this broker never submitted.
    let stray = Command::new(agent_exe())
        .arg("--token-file")
        .arg(b.token_file())
        .env("SCALABLE_PILOT_ID", "stray-42")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    b.agents.push(stray);
    b.wait_agents(3);
    wait_until(
        Duration::from_secs(10),
        "the unmanaged agent to be recorded",
        || {
            b.db()
            .query_row(
                "SELECT COUNT(*) FROM events WHERE kind = 'unmanaged_agent' AND detail LIKE '%stray-42%'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 1
        },
    );
    assert_eq!(pilots(&b).len(), 1, "an unmanaged agent is not a pilot");
    // Scale to zero: the idle pilot's agent is drained, its process ends, and
    // reconciliation with the provider ends the record.
    let down: serde_json::Value =
        serde_json::from_str(&b.ok(&["scale", "--target", "lab", "=0", "--json"])).unwrap();
    assert_eq!(down["drained"].as_array().unwrap().len(), 1, "{down}");
    wait_until(Duration::from_secs(30), "the pilot record to end", || {
        pilots(&b)[0]["state"] == "ended"
    });
    let p = &pilots(&b)[0];
    assert!(p["connected_at_ms"].as_u64().unwrap() >= p["submitted_at_ms"].as_u64().unwrap());
    let wait: i64 = b
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'pilot_connected'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(wait, 1, "queue wait recorded as telemetry");
    let out = b.cli(&["scale", "--target", "elsewhere", "=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = b.cli(&["scale", "--target", "lab", "~1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Regression (issue 13, bug 3): a pilot's agent that connected before the
/// broker recorded its pilot (the provider's `start` had not returned) was
/// never linked: the pilot stayed without an agent and `scale` cancelled it
/// as "not connected yet" while its agent served. The fail point holds that
/// window open for 2 s after the local provider started the agent.
#[test]
fn a_pilot_whose_agent_connected_first_is_linked_and_drained_not_cancelled() {
    let m = std::env::temp_dir().join(format!("scalable-pilots-race-{}.yaml", std::process::id()));
    std::fs::write(&m, MANIFEST).unwrap();
    let b = Broker::start_env(
        &["--manifest", &m.to_string_lossy(), "--target", "lab"],
        &[("SCALABLE_FAILPOINTS", "fleet.after_start=delay@1")],
    );
    b.wait_agents(1);
    let up: serde_json::Value =
        serde_json::from_str(&b.ok(&["scale", "--target", "lab", "=1", "--json"])).unwrap();
    assert_eq!(up["started"].as_array().unwrap().len(), 1, "{up}");
    assert!(b.log().contains("failpoint fleet.after_start: delay"));
    let unmanaged_first = b
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'unmanaged_agent'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(
        unmanaged_first, 1,
        "its agent came before its pilot was recorded"
    );
    wait_until(Duration::from_secs(10), "the pilot to be linked", || {
        pilots(&b)
            .first()
            .is_some_and(|p| p["state"] == "connected" && p["agent"].is_u64())
    });
    let down: serde_json::Value =
        serde_json::from_str(&b.ok(&["scale", "--target", "lab", "=0", "--json"])).unwrap();
    assert_eq!(down["cancelled"].as_array().unwrap().len(), 0, "{down}");
    assert_eq!(down["drained"].as_array().unwrap().len(), 1, "{down}");
    let _ = std::fs::remove_file(&m);
}
