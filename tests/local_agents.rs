//! The broker's own local agents (`--local-agents N`) across a broker crash:
//! the agents outlive a `kill -9` and reconnect; the restarted broker adopts
//! them instead of starting N more.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

/// Processes whose stdout is a local agent log of `b`'s state dir: its local
/// agents, whoever started them (an exited one has no descriptors left).
fn local_agent_pids(b: &Broker) -> BTreeSet<u32> {
    let logs = b.state().join("local-agents");
    let mut pids = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(e.path().join("fd/1")).is_ok_and(|p| p.starts_with(&logs)) {
            pids.insert(pid);
        }
    }
    pids
}

/// Names of the agents the broker lists as connected.
fn connected(b: &Broker) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["agents", "--json"])).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["connected"] == true)
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Regression (issue 13, bug 4): restarting a killed broker with
/// `--local-agents 2` gave 4 agents: the two that outlived it reconnected
/// under the same names and two new ones started.
#[test]
fn a_restarted_broker_adopts_the_local_agents_that_outlived_it() {
    let mut b = Broker::start_with(&["--local-agents", "2", "--local-agent-cpus", "1"]);
    b.wait_agents(2);
    let survivors = local_agent_pids(&b);
    assert_eq!(survivors.len(), 2, "{survivors:?}");
    b.kill9();
    assert_eq!(local_agent_pids(&b), survivors, "they outlive the broker");
    b.restart(&[]);
    wait_until(
        Duration::from_secs(30),
        "both survivors to reconnect",
        || connected(&b).len() >= 2,
    );
    assert_eq!(
        local_agent_pids(&b),
        survivors,
        "no local agent started beside the survivors"
    );
    b.ok(&["submit", "--wait", "--", "true"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(connected(&b), vec!["local-1", "local-2"]);
    assert_eq!(local_agent_pids(&b), survivors);
}
