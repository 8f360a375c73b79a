//! The fuzz campaign (issue 12; `scripts/fuzz.sh`): property tests that no
//! input makes the manifest loader, the workflow parser and validator, or the
//! frame decoder panic, whatever the bytes.
//!
//! `FUZZ_CASES` sets the cases per target (default [`CASES_DEFAULT`], what the
//! normal suite runs); each target prints one line: cases run, panics, and the
//! mean and largest time per case. Inputs are arbitrary bytes, token soups of
//! each format's own words, and random edits of a valid document or frame, so
//! both the shallow and the deep paths are reached. Tests only: this module
//! must not be part of a build that ships.

use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;

use crate::frame::{encode_frame, read_frame};
use crate::manifest::{load_manifest, LoadOptions};
use crate::protocol::{
    CliHello, FromAgent, Hello, HelloReply, Request, Response, SubmitRequest, ToAgent,
    MESSAGE_BYTES_MAX,
};
use crate::workflow::{parse_workflow, validate};

/// Cases per target when `FUZZ_CASES` is not set: enough to catch a
/// regression in the normal suite, small enough to take seconds.
const CASES_DEFAULT: u32 = 200;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_DEFAULT)
}

/// Runs `check` on `cases()` inputs of `strategy`, prints the target's line
/// and fails with the smallest input that panicked, if any.
fn campaign<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value)) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let count = Cell::new(0u64);
    let (checking, slowest) = (Cell::new(Duration::ZERO), Cell::new(Duration::ZERO));
    let start = Instant::now();
    let result = runner.run(&strategy, |input| {
        count.set(count.get() + 1);
        let t = Instant::now();
        check(input);
        let took = t.elapsed();
        checking.set(checking.get() + took);
        slowest.set(slowest.get().max(took));
        Ok(())
    });
    let n = count.get().max(1) as f64;
    let panics = u32::from(result.is_err());
    println!(
        "fuzz {target}: {} cases, {panics} panics, {:.1} us/case checked ({:.1} us/case with generation), slowest {:.1} ms",
        count.get(),
        checking.get().as_secs_f64() * 1e6 / n,
        start.elapsed().as_secs_f64() * 1e6 / n,
        slowest.get().as_secs_f64() * 1e3
    );
    if let Err(e) = result {
        // One line, so scripts/fuzz.sh can show it among the shrinking noise.
        let e = e.to_string().replace('\n', " ");
        panic!("fuzz {target} failed: {e}");
    }
}

/// A document made of `words` and a few generic pieces.
fn soup(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => prop::sample::select(words).prop_map(String::from),
        2 => prop::sample::select(YAML_PIECES).prop_map(String::from),
        1 => "[a-z0-9_./{}%|-]{0,8}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..96).prop_map(|t| t.concat())
}

/// `seed` with `cut` bytes at `at` replaced by `insert` (kept on char bounds).
fn edit(seed: &str, at: usize, cut: usize, insert: &str) -> String {
    let mut at = at.min(seed.len());
    while !seed.is_char_boundary(at) {
        at -= 1;
    }
    let mut end = (at + cut).min(seed.len());
    while !seed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{insert}{}", &seed[..at], &seed[end..])
}

fn text_inputs(words: &'static [&'static str], seed: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        soup(words),
        (0..seed.len() + 1, 0usize..48, soup(words))
            .prop_map(move |(at, cut, ins)| edit(seed, at, cut, &ins)),
    ]
    .boxed()
}

const YAML_PIECES: &[&str] = &[
    "\n",
    "  ",
    "    ",
    "- ",
    ": ",
    ", ",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "<<: ",
    "\"",
    "'",
    "#",
    "!!str ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "---\n",
    "\t",
    "?",
    "\r\n",
    "\u{0}",
    "é",
    "-1",
    "0",
    "18446744073709551616",
    "1e999",
    "${X}",
    "${",
    "{{ ",
    " }}",
    "{%",
    "%}",
];

const WORKFLOW_WORDS: &[&str] = &[
    "workflow: ",
    "jobs:",
    "- name: ",
    "name: ",
    "command: ",
    "foreach: ",
    "range: ",
    "after: ",
    "tag: ",
    "task: ",
    "resources: ",
    "cpus: ",
    "memory: ",
    "gpus: ",
    "inputs: ",
    "outputs: ",
    "cache: true",
    "retries: ",
    "walltime: ",
    "env: ",
    "workdir: ",
    "features: ",
    "priority: ",
    "max_fails: ",
    "max_running: ",
    "per: item",
    "job: ",
    "{{ item }}",
    "{{ index }}",
    "{{ run_id }}",
    "{{ item.a }}",
    "{% for i in range(3) %}",
    "{% endfor %}",
    "1..=3",
    "0..10",
    "16G",
    "01:00:00",
    "90m",
    "sh",
    "-c",
    "echo",
    "a",
    "b",
];

const WORKFLOW_SEED: &str = "workflow: demo
jobs:
  - name: simulate
    foreach: [ssp1, ssp2, ssp3]
    command: [sh, -c, \"echo {{ item }} > out/{{ item }}.txt\"]
    resources: {cpus: 2, memory: 1G}
    outputs: [\"out/{{ item }}.txt\"]
    retries: 2
    walltime: \"00:10:00\"
    env: {SCENARIO: \"{{ item }}\"}
  - name: sweep
    range: \"1..=4\"
    command: [echo, \"{{ index }}\"]
    after: [simulate]
  - name: aggregate
    tag: post
    command: [cat, out/ssp1.txt]
    after: [simulate, sweep]
    cache: true
";

const MANIFEST_WORDS: &[&str] = &[
    "version: 1\n",
    "project:",
    "name: ",
    "output_roots: ",
    "targets:",
    "components:",
    "tasks:",
    "overlays:",
    "workflow:",
    "provider: ",
    "local",
    "slurm",
    "aws",
    "gcp",
    "kubernetes",
    "max_workers: ",
    "threads_per_worker: ",
    "adaptive: ",
    "minimum: ",
    "maximum: ",
    "queue: ",
    "walltime: ",
    "region: ",
    "cluster_type: ",
    "fargate",
    "image: ",
    "cpus: ",
    "memory: ",
    "component: ",
    "cache: ",
    "retries: ",
    "tags: ",
    "mounts: ",
    "env: ",
    "containers: ",
    "/data",
    "16G",
    "04:00:00",
];

const MANIFEST_SEED: &str = "version: 1
project: {name: demo, output_roots: [/data/shared]}
targets:
  laptop: {provider: local, max_workers: 2, threads_per_worker: 2}
  hpc:
    provider: slurm
    queue: normal
    walltime: \"04:00:00\"
    adaptive: {minimum: 0, maximum: 8}
components:
  sim: {image: \"docker://sim:1\", cpus: 2, memory: 4G}
tasks:
  run_sim: {component: sim, cache: true, retries: 2}
overlays:
  big:
    components:
      sim: {memory: 16G}
";

#[test]
fn the_seeds_are_valid_documents() {
    let def = parse_workflow("wf.yaml", WORKFLOW_SEED).expect("the workflow seed parses");
    validate(&def, "wf.yaml").expect("and validates");
    let env = |_: &str| None;
    let opts = LoadOptions {
        target: Some("hpc"),
        overlays: &["big".to_string()],
        env: &env,
    };
    load_manifest("scalable.yaml", MANIFEST_SEED, &opts).expect("the manifest seed loads");
}

#[test]
fn fuzz_workflow_parser_and_validator() {
    campaign(
        "workflow",
        text_inputs(WORKFLOW_WORDS, WORKFLOW_SEED),
        |text| {
            if let Ok(def) = parse_workflow("wf.yaml", &text) {
                // What passed the parser passes the broker's second look.
                let _ = validate(&def, "wf.yaml");
            }
        },
    );
}

#[test]
fn fuzz_manifest_loader_and_validator() {
    let env = |name: &str| (name == "X").then(|| "4".to_string());
    let overlays = ["big".to_string()];
    campaign(
        "manifest",
        (text_inputs(MANIFEST_WORDS, MANIFEST_SEED), any::<bool>()),
        |(text, with_overlay)| {
            let opts = LoadOptions {
                target: with_overlay.then_some("hpc"),
                overlays: if with_overlay { &overlays } else { &[] },
                env: &env,
            };
            let _ = load_manifest("scalable.yaml", &text, &opts);
        },
    );
}

/// One valid frame of each stream's first message, to mutate.
fn seed_frames() -> Vec<Vec<u8>> {
    let def = parse_workflow("wf.yaml", WORKFLOW_SEED).expect("the seed parses");
    let submit = Request::Submit(SubmitRequest {
        workflow: def,
        cwd: "/work".into(),
        source: "wf.yaml".into(),
        manifest_json: None,
    });
    let hello = Hello::Cli(CliHello {
        protocol: 3,
        cli_version: "0.1.0".into(),
        token: "t".repeat(64),
    });
    let refused = HelloReply::Refused {
        reason: "bad token".into(),
    };
    vec![
        encode_frame(&submit).expect("encodes"),
        encode_frame(&hello).expect("encodes"),
        encode_frame(&refused).expect("encodes"),
        encode_frame(&Request::Status {
            run: None,
            after: None,
        })
        .expect("encodes"),
    ]
}

/// Arbitrary bytes, bytes behind a prefix that matches their length (so the
/// decoder, not the length check, sees them), and edits of valid frames.
fn frame_inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds = seed_frames();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|body| {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend(body);
            f
        }),
        (prop::sample::select(seeds), edits).prop_map(|(mut f, edits)| {
            for (at, byte, kind) in edits {
                let i = at.index(f.len().max(1));
                match kind {
                    0 if i < f.len() => f[i] = byte,
                    1 => f.insert(i.min(f.len()), byte),
                    _ if i < f.len() => {
                        f.remove(i);
                    }
                    _ => {}
                }
            }
            f
        }),
    ]
    .boxed()
}

/// Decodes every frame in `bytes` as `T` until the stream ends or breaks.
fn read_all<T: DeserializeOwned>(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Vec<T> {
    let mut reader = bytes;
    let mut out = Vec::new();
    while let Ok(Some(m)) = rt.block_on(read_frame::<_, T>(&mut reader, MESSAGE_BYTES_MAX)) {
        out.push(m);
    }
    out
}

#[test]
fn fuzz_protocol_frames_into_every_message_type() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    campaign("frames", frame_inputs(), |bytes| {
        let _ = read_all::<Hello>(&rt, &bytes);
        // The broker reads a hello's head before the rest (any bytes after it).
        let _ = crate::handshake::HelloHead::decode(bytes.get(4..).unwrap_or_default());
        let _ = read_all::<HelloReply>(&rt, &bytes);
        let _ = read_all::<ToAgent>(&rt, &bytes);
        let _ = read_all::<FromAgent>(&rt, &bytes);
        let _ = read_all::<Response>(&rt, &bytes);
        for req in read_all::<Request>(&rt, &bytes) {
            // The broker validates a decoded workflow again: that must not
            // panic on shapes YAML cannot produce either.
            if let Request::Submit(s) = req {
                let _ = validate(&s.workflow, &s.source);
            }
        }
    });
}
