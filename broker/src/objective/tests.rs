//! Plans of the Demeter example (`examples/demeter/`) for every objective and
//! policy, with and without measured history, snapshot-tested
//! (`SCALABLE_BLESS=1` rewrites `snapshots/`).

use scalable_common::manifest::{load_manifest, LoadOptions, Manifest};
use scalable_common::workflow::parse_workflow;

use super::*;
use crate::agent_binary::AgentLocation;
use crate::pilots::{self, BrokerAccess};

const MANIFEST: &str = include_str!("../../../examples/demeter/scalable.yaml");
const WORKFLOW: &str = include_str!("../../../examples/demeter/workflow.yaml");

fn manifest() -> Manifest {
    let opts = LoadOptions {
        target: None,
        overlays: &[],
        env: &|_: &str| None,
    };
    load_manifest("scalable.yaml", MANIFEST, &opts).unwrap()
}

fn access() -> BrokerAccess {
    BrokerAccess {
        address: "BROKER_HOST:7420".into(),
        fingerprint: "0".repeat(64),
        token_file: ".scalable/agent.token".into(),
        agent: AgentLocation::resolve(None),
    }
}

fn history() -> History {
    History {
        run_seconds: [
            ("demeter".to_string(), 1_500.0),
            ("postprocess".to_string(), 40.0),
        ]
        .into(),
        queue_wait_seconds: Some(90.0),
    }
}

fn all_plans(target: &str, history: Option<&History>, workflow: bool) -> Vec<ObjectivePlan> {
    let m = manifest();
    let rows = pilots::plan(&m, target).unwrap();
    let costs = pilots::plan_costs(&m, target, &rows, &access()).unwrap();
    let wf = workflow.then(|| parse_workflow("workflow.yaml", WORKFLOW).unwrap());
    let work = work_per_tag(&m, &rows, wf.as_ref(), history);
    let input = PlanInput {
        target,
        provider: m.target(target).unwrap().provider.name(),
        rows: &rows,
        costs: &costs,
        work: &work,
        history,
        workflow: workflow.then_some("workflow.yaml"),
        adaptive: m.target(target).unwrap().adaptive.is_some(),
    };
    let mut out = Vec::new();
    for o in Objective::NAMES {
        for p in Policy::NAMES {
            let (o, p) = (Objective::parse(o).unwrap(), Policy::parse(p).unwrap());
            out.push(plan(&input, o, p));
        }
    }
    out
}

fn snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/objective/snapshots")
        .join(name);
    if std::env::var_os("SCALABLE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {}: run with SCALABLE_BLESS=1", path.display()));
    assert_eq!(
        actual, expected,
        "snapshot {name} (SCALABLE_BLESS=1 rewrites it)"
    );
}

fn texts(plans: &[ObjectivePlan]) -> String {
    plans
        .iter()
        .map(crate::output::objective_plan_text)
        .collect::<Vec<_>>()
        .join("\n----\n\n")
}

#[test]
fn demeter_plans_without_history_come_from_the_manifest() {
    let plans = all_plans("aws", None, true);
    snapshot("demeter-aws-no-history.txt", &texts(&plans));
    for p in &plans {
        assert!(!p.history);
        for g in &p.groups {
            assert_ne!(g.run_seconds_source, WorkSource::History);
        }
    }
    let json = serde_json::to_string_pretty(&plans[0]).unwrap();
    snapshot("demeter-aws-no-history.json", &(json + "\n"));
}

#[test]
fn demeter_plans_with_history_use_the_measured_times_and_waits() {
    let h = history();
    let plans = all_plans("aws", Some(&h), true);
    snapshot("demeter-aws-history.txt", &texts(&plans));
    let hpc = all_plans("hpc", Some(&h), false);
    snapshot("demeter-hpc-history.txt", &texts(&hpc));
    for p in plans.iter().chain(&hpc) {
        for g in &p.groups {
            assert_eq!(g.run_seconds_source, WorkSource::History, "{}", g.tag);
            assert_eq!(g.queue_wait_seconds, 90.0);
        }
    }
}

#[test]
fn objectives_and_policies_pull_the_way_they_say() {
    let h = history();
    let m = manifest();
    let rows = pilots::plan(&m, "hpc").unwrap();
    let costs = pilots::plan_costs(&m, "hpc", &rows, &access()).unwrap();
    let work = work_per_tag(&m, &rows, None, Some(&h));
    let input = PlanInput {
        target: "hpc",
        provider: "slurm",
        rows: &rows,
        costs: &costs,
        work: &work,
        history: Some(&h),
        workflow: None,
        adaptive: false,
    };
    let go = |o, p| plan(&input, o, p);
    let time = go(Objective::MinimizeTime, Policy::Aggressive);
    let cost = go(Objective::MinimizeCost, Policy::Aggressive);
    let bal = go(Objective::Balance, Policy::Aggressive);
    assert!(time.predicted_makespan_seconds <= bal.predicted_makespan_seconds);
    assert!(bal.predicted_makespan_seconds <= cost.predicted_makespan_seconds);
    let safe = go(Objective::MinimizeCost, Policy::Safe);
    for (s, a) in safe.groups.iter().zip(&cost.groups) {
        let headroom = ((f64::from(a.workers) * 1.2).ceil() as u32).min(a.max_workers);
        assert_eq!(s.workers, headroom, "{}", s.tag);
    }
    let manual = go(Objective::MinimizeTime, Policy::Manual);
    for (g, r) in manual.groups.iter().zip(&rows) {
        assert_eq!(g.workers, r.workers, "the manifest's count");
    }
}

#[test]
fn bad_objective_and_policy_names_list_the_valid_ones() {
    assert_eq!(
        Objective::parse("cheapest").unwrap_err(),
        "unknown objective \"cheapest\" (valid: \"minimize cost\", \"minimize time\", \"balance\")"
    );
    assert_eq!(
        Policy::parse("yolo").unwrap_err(),
        "unknown policy \"yolo\" (valid: safe, aggressive, manual)"
    );
    assert_eq!(
        Objective::parse("Minimize_Time"),
        Ok(Objective::MinimizeTime)
    );
}
