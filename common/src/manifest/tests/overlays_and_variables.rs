//! Overlays and `${VAR}`: merging (maps merge, lists replace, `null`
//! removes), overlays of the `workflow:` section, and variable expansion.

use super::*;

#[test]
fn overlays_merge_maps_replace_lists_and_remove_nulls() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  hpc: {provider: slurm, queue: batch, account: GCIMS, tags: [a, b]}",
        "components:",
        "  a: {cpus: 1, env: {X: '1', Y: '2'}}",
        "  b: {cpus: 1}",
        "overlays:",
        "  change:",
        "    targets:",
        "      hpc: {queue: debug, account: null, tags: [b, a]}",
        "    components:",
        "      a: {env: {Y: '3', Z: '4'}}",
    );
    let m = ok(yaml, None, &["change"]);
    match &m.targets["hpc"].provider {
        Provider::Slurm { queue, account, .. } => {
            assert_eq!(queue.as_deref(), Some("debug"));
            assert_eq!(account.as_deref(), None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.targets["hpc"].tags, ["b", "a"]);
    let env: Vec<(&str, &str)> = m.components["a"]
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("X", "1"), ("Y", "3"), ("Z", "4")]);
}

#[test]
fn variables_expand_with_defaults_escapes_and_types() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  hpc:",
        "    provider: slurm",
        "    queue: a$$b",
        "    account: \"${EMPTY:-fallback}\"",
        "    qos: \"${EMPTY}x$y\"",
        "    constraint: \"${NOPE:-${WORKERS}}-${NOPE:-}\"",
        "    max_workers: ${WORKERS}",
        "    worker_cpus: \"${NOPE:-4}\"",
        "    setup: [\"echo $$HOME\"]",
    );
    let m = ok(yaml, None, &[]);
    let hpc = &m.targets["hpc"];
    match &hpc.provider {
        Provider::Slurm {
            queue,
            account,
            qos,
            constraint,
            setup,
            ..
        } => {
            assert_eq!(queue.as_deref(), Some("a$b"));
            assert_eq!(account.as_deref(), Some("fallback"));
            assert_eq!(qos.as_deref(), Some("x$y"));
            assert_eq!(constraint.as_deref(), Some("8-"));
            assert_eq!(setup, &["echo $HOME"]);
        }
        other => panic!("{other:?}"),
    }
    // A value made by an expansion takes the type it expands to.
    assert_eq!(hpc.max_workers, 8);
    assert_eq!(hpc.worker.cpus, Some(4));
}

#[test]
fn unset_variables_in_unused_parts_are_not_errors() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  local: {provider: local}",
        "  aws: {provider: aws, region: us-east-1, cluster_type: fargate, image: \"${NOPE_IMAGE}\"}",
        "overlays:",
        "  prod: {targets: {local: {max_workers: \"${NOPE_WORKERS}\"}}}",
    );
    let m = ok(yaml, Some("local"), &[]);
    assert_eq!(m.targets["local"].max_workers, 1);
    // Checking the whole manifest uses every target.
    assert_eq!(
        errors(yaml, None, &[]),
        ["scalable.yaml:5:73: targets.aws.image: environment variable NOPE_IMAGE is not set (hint: export it, or write ${NOPE_IMAGE:-default})"]
    );
    // An overlay that is applied is in use.
    assert_eq!(
        errors(yaml, Some("local"), &["prod"]),
        ["scalable.yaml:7:41: overlays.prod.targets.local.max_workers: environment variable NOPE_WORKERS is not set (hint: export it, or write ${NOPE_WORKERS:-default})"]
    );
}

#[test]
fn overlays_change_the_workflow_section_too() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets: {local: {provider: local}}",
        "workflow:",
        "  workflow: w",
        "  jobs:",
        "    - {name: a, command: [x]}",
        "overlays:",
        "  strict:",
        "    workflow: {max_fails: 3}",
        "  broken:",
        "    workflow:",
        "      jobs:",
        "        - {name: b, command: [y], retrys: 1}",
    );
    let m = ok(yaml, None, &["strict"]);
    let wf = m.workflow.unwrap();
    assert_eq!(wf.max_fails, Some(3));
    assert_eq!(wf.jobs[0].name, "a");
    // Lists replace: the overlay's jobs are the jobs; its error points into it.
    assert_eq!(
        errors(yaml, None, &["broken"]),
        ["scalable.yaml:14:35: overlays.broken.workflow.jobs[0].retrys: unknown key \"retrys\" (did you mean \"retries\"?)"]
    );
}

#[test]
fn an_overlay_removing_a_required_key_is_an_error_of_the_result() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  k8s: {provider: kubernetes, namespace: prod}",
        "overlays:",
        "  bare: {targets: {k8s: {namespace: null}}}",
    );
    ok(yaml, None, &[]);
    assert_eq!(
        errors(yaml, None, &["bare"]),
        ["scalable.yaml:4:3: targets.k8s: missing key \"namespace\" (hint: e.g. namespace: default)"]
    );
}
