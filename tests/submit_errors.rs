//! Bad workflows are refused at submit with exit 2, a message naming the file
//! and the place, and nothing stored.

use crate::support::*;

fn assert_nothing_stored(b: &Broker) {
    let st = b.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        0,
        "a refused submit stored a run: {st}"
    );
    let runs: i64 = b
        .db()
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 0);
}

#[test]
fn cyclic_workflow_exits_2_and_prints_the_cycle() {
    let b = Broker::start();
    let wf = b.write(
        "cycle.yaml",
        r#"
workflow: cyclic
jobs:
  - {name: a, command: ["true"], after: [c]}
  - {name: b, command: ["true"], after: [a]}
  - {name: c, command: ["true"], after: [b]}
"#,
    );
    let out = b.cli(&["submit", &wf]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cycle.yaml"), "{err}");
    assert!(err.contains("cycle"), "{err}");
    // The cycle is printed whole, in either direction, from any of its jobs.
    let printed = [
        "a -> b -> c -> a",
        "b -> c -> a -> b",
        "c -> a -> b -> c",
        "a -> c -> b -> a",
        "c -> b -> a -> c",
        "b -> a -> c -> b",
    ];
    assert!(printed.iter().any(|p| err.contains(p)), "{err}");
    assert_nothing_stored(&b);
}

#[test]
fn malformed_workflow_exits_2_naming_file_line_and_key() {
    let b = Broker::start();
    let wf = b.write(
        "typo.yaml",
        "workflow: typo\njobs:\n  - name: a\n    comand: [\"true\"]\n",
    );
    let out = b.cli(&["submit", &wf]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: typo.yaml:4:"), "{err}");
    assert!(err.contains("comand"), "{err}");
    assert!(err.contains("command"), "did-you-mean hint missing: {err}");
    assert_nothing_stored(&b);
}

#[test]
fn unknown_after_and_bad_template_exit_2() {
    let b = Broker::start();
    let wf = b.write(
        "refs.yaml",
        r#"
workflow: refs
jobs:
  - {name: first, command: ["echo", "{{ item | nosuchfilter }}"], foreach: [x]}
  - {name: second, command: ["true"], after: [frist]}
"#,
    );
    let out = b.cli(&["submit", &wf]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("frist"), "{err}");
    assert!(err.contains("nosuchfilter"), "{err}");
    assert_nothing_stored(&b);
}

#[test]
fn missing_file_and_no_command_exit_2() {
    let b = Broker::start();
    let out = b.cli(&["submit", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.yaml"), "{}", stderr(&out));
    let out = b.cli(&["submit"]);
    assert_eq!(out.status.code(), Some(2));
    let out = b.cli(&["submit", "--memory", "lots", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("512M"), "{}", stderr(&out));
    assert_nothing_stored(&b);
}
