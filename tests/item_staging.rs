//! Per-item dependencies with staging (issue 20): agents without a shared
//! filesystem (private dirs on this one host), a per-item transform whose
//! declared input is the matching upstream item's declared output. Each
//! transform gets exactly its own item's file, fetched through the broker,
//! and a slow item holds back only its own transform (from start and end
//! times the tasks recorded in a log dir outside every private dir).

use std::time::Duration;

use crate::checkpoints_private::private_agent;
use crate::support::*;

fn stamp(b: &Broker, name: &str) -> u128 {
    let path = b.dir.path().join("stamps").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), b.log()));
    text.trim().parse().expect("a timestamp")
}

#[test]
fn a_per_item_transform_gets_its_own_items_output_through_staging_and_is_not_held_back() {
    let mut b = Broker::start();
    let a = private_agent(&mut b, "a", &["--cpus", "4"]);
    let c = private_agent(&mut b, "c", &["--cpus", "4"]);
    b.wait_agents(2);
    let stamps = b.dir.path().join("stamps");
    std::fs::create_dir_all(&stamps).unwrap();
    let s = stamps.display();
    let wf = b.write(
        "items.yaml",
        &format!(
            r#"
workflow: items
jobs:
  - name: produce
    foreach: [slow, b, c, d]
    outputs: ["out/{{{{ item }}}}.txt"]
    command: [sh, -c, "if [ {{{{ item }}}} = slow ]; then sleep 4; fi; mkdir -p $SCALABLE_STAGE_DIR/out && seq 1 {{{{ index + 1 }}}}000 | sed 's/^/{{{{ item }}}} /' > $SCALABLE_STAGE_DIR/out/{{{{ item }}}}.txt; date +%s%N > {s}/produce-{{{{ item }}}}.end"]
  - name: transform
    foreach: [d, c, b, slow]
    after: [{{job: produce, per: item}}]
    inputs: ["out/{{{{ item }}}}.txt"]
    outputs: ["t/{{{{ item }}}}.txt"]
    command: [sh, -c, "date +%s%N > {s}/transform-{{{{ item }}}}.start; mkdir -p $SCALABLE_STAGE_DIR/t && wc -l < out/{{{{ item }}}}.txt > $SCALABLE_STAGE_DIR/t/{{{{ item }}}}.txt && sort -r out/{{{{ item }}}}.txt | head -1 >> $SCALABLE_STAGE_DIR/t/{{{{ item }}}}.txt; ls out > {s}/transform-{{{{ item }}}}.saw"]
"#
        ),
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let (out, _) = run_within(b.cli_command(&["wait", &run]), Duration::from_secs(90));
    let out = out.expect("the run ends within 90 s");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), b.log());
    // Each transform's result is its own item's, promoted into the shared
    // work dir from the broker's store.
    for (i, item) in ["slow", "b", "c", "d"].iter().enumerate() {
        let lines = (i + 1) * 1000;
        let t = std::fs::read_to_string(b.work().join(format!("t/{item}.txt"))).unwrap();
        let biggest = (1..=lines).map(|n| format!("{item} {n}")).max().unwrap();
        assert_eq!(t, format!("{lines}\n{biggest}\n"), "transform {item}");
        // Its private dir held only its own input.
        let saw = std::fs::read_to_string(stamps.join(format!("transform-{item}.saw"))).unwrap();
        assert_eq!(
            saw.trim(),
            format!("{item}.txt"),
            "transform {item} saw {saw}"
        );
    }
    // The slow item held back only its own transform.
    let slow_end = stamp(&b, "produce-slow.end");
    for item in ["b", "c", "d"] {
        let start = stamp(&b, &format!("transform-{item}.start"));
        assert!(
            start < slow_end,
            "transform {item} waited for the slow item"
        );
        assert!(stamp(&b, &format!("produce-{item}.end")) < start);
    }
    assert!(stamp(&b, "transform-slow.start") > slow_end);
    // Staging moved every transform's input (telemetry).
    let staged: i64 = b
        .db()
        .query_row(
            "SELECT COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id
             WHERE j.name = 'transform' AND a.end_class = 'SUCCESS' AND a.stage_in_bytes > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(staged, 4, "every transform staged its input in");
    let _ = (a, c);
}
