//! The cache seen from a user's chair (issue 13): an identical submit right
//! after the first one finished runs nothing again. Oracles are the lines the
//! tasks append themselves, not the store.

use crate::support::*;

/// Lines of `truth.log` in the work dir: one per task that really ran.
fn ran(b: &Broker) -> usize {
    std::fs::read_to_string(b.work().join("truth.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn counts(b: &Broker) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["status", "last", "--json"])).unwrap();
    v[0]["counts"].clone()
}

/// Regression (issue 13, bug 1): the cache entry of a task was saved some
/// time after its run was reported finished, so a second identical submit
/// issued at once re-ran the last task(s) and `why` said "no earlier run".
/// Each round is a fresh workflow (its keys are new) submitted twice in a
/// row with nothing in between; ten rounds, not one rerun.
#[test]
fn an_identical_submit_right_after_the_first_runs_nothing_again() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    for round in 1..=10 {
        let wf = b.write(
            "again.yaml",
            &format!(
                r#"workflow: again
jobs:
  - name: step
    range: "1..=5"
    cache: true
    outputs: ["out/{round}-{{{{ item }}}}.txt"]
    command: [sh, -c, "echo ran {round} {{{{ item }}}} >> truth.log; mkdir -p out; echo {round} > out/{round}-{{{{ item }}}}.txt"]
"#
            ),
        );
        let before = ran(&b);
        b.ok(&["submit", &wf, "--wait"]);
        assert_eq!(
            ran(&b),
            before + 5,
            "round {round}: the first submit runs all five"
        );
        b.ok(&["submit", &wf, "--wait"]);
        let c = counts(&b);
        for index in 0..5 {
            let path = format!("last/step/{index}");
            let why = b.ok(&["why", &path]);
            assert!(
                why.contains("cached"),
                "round {round}: {path} ran again: {why}"
            );
        }
        assert_eq!(c["cached"], 5, "round {round}: {c}");
        assert_eq!(ran(&b), before + 5, "round {round}: nothing ran again");
    }
}
