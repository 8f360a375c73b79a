//! Limits (size, alias bombs, nesting) and property tests that no input
//! panics.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

#[test]
fn empty_and_oversized_files_are_refused_before_parsing() {
    assert_eq!(
        errors(" \n# nothing\n", None, &[]),
        ["scalable.yaml: manifest is empty (hint: start with version: 1, project: {name: NAME} and targets:)"]
    );

    let line = "  t: {provider: local, max_workers: 4, threads_per_worker: 2}\n";
    let mut text = String::from("targets:\n");
    while text.len() < 10 << 20 {
        text.push_str(line);
    }
    text.truncate(10 << 20);
    // Bounded, not a benchmark: an expansion would take minutes and gigabytes;
    // 5 s leaves room for a debug build on a loaded 2-core machine.
    let start = Instant::now();
    let e = errors(&text, None, &[]);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        e,
        ["scalable.yaml: file is 10485760 bytes; manifests are limited to 8 MiB"]
    );
}

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut text =
        String::from("version: 1\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        text.push_str(&format!("lol{i}: &l{i} [{refs}]\n"));
    }
    let start = Instant::now();
    let e = errors(&text, None, &[]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with(
            "aliases expand to more than 20000 values (an alias bomb?) \
             (hint: anchors and aliases may repeat small parts of a manifest, not build a huge one)"
        ),
        "{e:?}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("version: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = errors(&text, None, &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].ends_with("nesting is deeper than 64 levels"), "{e:?}");
}

#[test]
fn anchors_and_merge_keys_work_within_limits() {
    let yaml = y!(
        "version: 1",
        "project: {name: p}",
        "targets:",
        "  a: &slurm {provider: slurm, queue: batch, account: GCIMS}",
        "  b:",
        "    <<: *slurm",
        "    queue: debug",
    );
    let m = ok(yaml, None, &[]);
    match &m.targets["b"].provider {
        Provider::Slurm { queue, account, .. } => {
            assert_eq!(queue.as_deref(), Some("debug"));
            assert_eq!(account.as_deref(), Some("GCIMS"));
        }
        other => panic!("{other:?}"),
    }
}

/// Pieces that YAML and manifests are made of, for generated documents.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "version: 1\n",
        "project: {name: p}\n",
        "targets:\n",
        "components:\n",
        "tasks:\n",
        "overlays:\n",
        "workflow:\n",
        "  ",
        "    ",
        "- ",
        "\n",
        ": ",
        ", ",
        "{",
        "}",
        "[",
        "]",
        "&a ",
        "*a",
        "<<: ",
        "${X}",
        "${X:-4}",
        "$$",
        "${",
        "\"",
        "'",
        "#",
        "!!str ",
        "|\n",
        ">-\n",
        "~",
        "null",
        "local",
        "slurm",
        "aws",
        "provider",
        "max_workers",
        "4",
        "\"4\"",
        "-1",
        "0",
        "16G",
        "1.5T",
        "04:00:00",
        "memory",
        "cpus",
        "image",
        "adaptive",
        "minimum",
        "maximum",
        "jobs",
        "name",
        "command",
        "fix-oom",
        "demeter",
        "\t",
        "?",
        "---\n",
        "...\n",
        "%YAML 1.2\n",
        "é",
        "\u{0}",
        "\r\n",
    ]);
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

fn never_panics(text: &str, target: Option<&str>, overlays: &[String]) {
    let opts = LoadOptions {
        target,
        overlays,
        env: &env,
    };
    if let Err(e) = load_manifest("scalable.yaml", text, &opts) {
        assert!(!e.0.is_empty());
        for line in e.to_string().lines() {
            assert!(line.starts_with("scalable.yaml"), "{line}");
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        never_panics(&String::from_utf8_lossy(&bytes), None, &[]);
    }

    #[test]
    fn arbitrary_yaml_never_panics(
        text in yamlish(),
        target in prop::option::of(prop::sample::select(vec!["local", "aws", "nope"])),
        overlays in prop::collection::vec(prop::sample::select(vec!["fix-oom", "x"]), 0..3),
    ) {
        let overlays: Vec<String> = overlays.into_iter().map(String::from).collect();
        never_panics(&text, target, &overlays);
    }

    #[test]
    fn edits_of_the_seed_manifest_never_panic(
        at in 0usize..2000,
        cut in 0usize..40,
        insert in yamlish(),
        apply in any::<bool>(),
    ) {
        let at = at.min(DEMETER.len());
        let end = (at + cut).min(DEMETER.len());
        let text = format!("{}{}{}", &DEMETER[..at], insert, &DEMETER[end..]);
        let overlays = if apply {
            vec!["fix-oom".to_string(), "k8s-fine-resolution".to_string()]
        } else {
            Vec::new()
        };
        never_panics(&text, Some("aws"), &overlays);
        never_panics(&text, None, &overlays);
    }
}
