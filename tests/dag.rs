//! DAG order and tag routing, observed from what the tasks and the store recorded.

use crate::support::*;

#[test]
fn dag_order_is_respected() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "4"]);
    b.wait_agents(1);
    // Each fan task records when it ended; the aggregate records when it started
    // and fails if any fan output is missing.
    let wf = b.write(
        "dag.yaml",
        r#"
workflow: dag
jobs:
  - name: aggregate
    after: [fan]
    command: [sh, -c, "for i in 0 1 2 3 4 5; do test -f fan-$i.out || exit 7; done; date +%s%N > agg.start"]
  - name: fan
    range: "0..=5"
    command: [sh, -c, "sleep 0.2; date +%s%N > fan-{{ item }}.out"]
    outputs: ["fan-{{ item }}.out"]
"#,
    );
    b.ok(&["submit", &wf, "--wait"]);
    let read = |name: &str| -> u128 {
        std::fs::read_to_string(b.work().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let agg_start = read("agg.start");
    for i in 0..6 {
        assert!(
            read(&format!("fan-{i}.out")) < agg_start,
            "fan {i} ended after aggregate started"
        );
    }
    // And the broker's own record agrees: aggregate's attempt started after every fan attempt ended.
    let db = b.db();
    let fan_end: i64 = db
        .query_row(
            "SELECT MAX(a.ended_at_us) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.name = 'fan'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let agg_start_db: i64 = db
        .query_row(
            "SELECT MIN(a.started_at_us) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.name = 'aggregate'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(agg_start_db >= fan_end);
}

#[test]
fn postprocess_tasks_never_land_on_a_demeter_only_agent() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2", "--tags", "demeter", "--name", "dem"]);
    b.agent(&["--cpus", "2", "--tags", "postprocess", "--name", "post"]);
    b.wait_agents(2);
    let wf = b.write(
        "tags.yaml",
        r#"
workflow: tags
jobs:
  - name: downscale
    tag: demeter
    range: "1..=8"
    command: [sh, -c, "sleep 0.05"]
  - name: summarise
    tag: postprocess
    range: "1..=8"
    command: [sh, -c, "sleep 0.05"]
"#,
    );
    b.ok(&["submit", &wf, "--wait"]);
    let db = b.db();
    let mut q = db
        .prepare(
            "SELECT j.name, g.name FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN agents g ON g.id = a.agent_id",
        )
        .unwrap();
    let rows: Vec<(String, String)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 16);
    for (job, agent) in rows {
        match job.as_str() {
            "summarise" => assert_eq!(agent, "post", "a postprocess task ran on {agent}"),
            "downscale" => assert_eq!(agent, "dem"),
            other => panic!("unexpected job {other}"),
        }
    }
}
