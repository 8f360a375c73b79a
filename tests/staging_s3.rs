//! Staging through an S3 store (issue 20, `storage: s3://bucket/prefix`):
//! agents started with `--no-shared-fs --storage` run every task in a
//! private directory and move declared inputs and outputs through moto's S3
//! (`scripts/moto-testbed.sh`, a real S3 API on loopback) with the real `aws`
//! CLI; the broker puts inputs there and fetches the counted outputs back.
//! The results must equal a shared-filesystem run byte for byte, also across
//! an agent `kill -9` mid-upload and a broker `kill -9` mid-run. Skipped, with
//! the reason printed, only when moto cannot be started on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::staging::*;
use crate::support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// moto's S3 environment (endpoint, region, dummy credentials), started if
/// it is not running; `None` (said on stderr) when it cannot be started.
fn moto() -> Option<Vec<(String, String)>> {
    let out = Command::new(repo().join("scripts/moto-testbed.sh"))
        .arg("start")
        .output()
        .expect("run scripts/moto-testbed.sh");
    if !out.status.success() {
        eprintln!(
            "skipped: moto cannot be started on this machine: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let dir = std::env::var("SCALABLE_MOTO_DIR").unwrap_or_else(|_| "/tmp/scalable-moto".into());
    let env = std::fs::read_to_string(Path::new(&dir).join("env")).expect("moto's env file");
    let mut vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The testbed's CLI may sit where pip put it (pyenv shims): keep PATH.
    vars.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    Some(vars)
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn aws(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new("aws")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run aws")
}

/// A fresh bucket of its own for one test (moto is shared: never reset
/// it), removed with what it holds when the test ends.
struct Bucket {
    name: String,
    env: Vec<(String, String)>,
}

impl std::ops::Deref for Bucket {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = aws(
            &self.env,
            &["s3", "rb", "--force", &format!("s3://{}", self.name)],
        );
    }
}

fn bucket(env: &[(String, String)]) -> Bucket {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "scalable-s3-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let out = aws(env, &["s3api", "create-bucket", "--bucket", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    Bucket {
        name,
        env: env.to_vec(),
    }
}

/// The blobs in `bucket` under `prefix/blobs/`: (sha256, bytes).
fn blobs(env: &[(String, String)], bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let out = aws(
        env,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            &format!("{prefix}/blobs/"),
            "--query",
            "Contents[].Key",
            "--output",
            "text",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let keys: Vec<&str> = text.split_whitespace().filter(|k| *k != "None").collect();
    keys.iter()
        .map(|k| {
            let uri = format!("s3://{bucket}/{k}");
            let got = aws(env, &["s3", "cp", "--only-show-errors", &uri, "-"]);
            assert!(got.status.success(), "{}", stderr(&got));
            (k.rsplit('/').next().unwrap().to_string(), got.stdout)
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    let mut h = scalable_common::staging::Hasher::default();
    h.update(data);
    h.finish()
}

/// Every blob in the store is whole: its bytes hash to its name.
fn assert_blobs_whole(env: &[(String, String)], bucket: &str, prefix: &str) -> usize {
    let all = blobs(env, bucket, prefix);
    for (name, bytes) in &all {
        assert_eq!(&sha256_hex(bytes), name, "a blob that is not its content");
    }
    all.len()
}

fn log_lines(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The flow tests run one at a time: each starts some 40 `aws` processes (a
/// Python interpreter each), and three at once beside the rest of the suite
/// on a 2-core machine made each take minutes.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a flow run through moto may take (the suite's load included).
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn s3_agent(b: &mut Broker, name: &str, url: &str, env: &[(&str, &str)]) -> PathBuf {
    private_agent_with(b, name, &["--storage", url], env)
}

#[test]
fn private_agents_move_files_through_s3_and_match_the_shared_run_byte_for_byte() {
    let Some(env) = moto() else { return };
    let expected = reference();
    let _one = one_at_a_time();
    let bkt = bucket(&env);
    let url = format!("s3://{bkt}/runs/flow");
    let mut b = Broker::start_env(&[], &borrowed(&env));
    s3_agent(&mut b, "a", &url, &borrowed(&env));
    s3_agent(&mut b, "c", &url, &borrowed(&env));
    b.wait_agents(2);
    let wf = b.write("flow.yaml", FLOW);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_succeeded(&b, &run, RUN_LIMIT);
    assert_eq!(&results(&b.work()), expected);
    assert_counted_once(&b);
    assert_no_leftovers(&b.work());
    // Every result went through the store, once, as a whole blob named by
    // its SHA-256: 4 produced, 4 transformed, 1 aggregate.
    let stored = blobs(&env, &bkt, "runs/flow");
    let mut names: Vec<&String> = stored.iter().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<String> = expected.values().map(|v| sha256_hex(v)).collect();
    want.sort();
    assert_eq!(names, want.iter().collect::<Vec<_>>());
    assert_blobs_whole(&env, &bkt, "runs/flow");
    // Deduplicated: the inputs of transform and aggregate were outputs
    // already in the store, so the broker uploaded nothing; the agents
    // uploaded each blob once.
    assert_eq!(
        log_lines(&b.dir.path().join("broker.log"), "uploading "),
        Vec::<String>::new()
    );
    let uploads = ["a", "c"]
        .iter()
        .map(|n| log_lines(&b.dir.path().join(format!("agent-{n}.log")), "uploading ").len())
        .sum::<usize>();
    assert_eq!(uploads, 9, "one upload per distinct output");
    // An input from the submit directory is put in the store by the broker
    // (once: the run's own output beside it is there already).
    std::fs::write(b.work().join("extra.txt"), b"from the submit dir\n").unwrap();
    let wf = b.write(
        "extra.yaml",
        "workflow: extra\njobs:\n  - name: copy\n    inputs: [extra.txt, data/1.txt]\n    outputs: [copy.txt]\n    command: [sh, -c, \"cat extra.txt data/1.txt > $SCALABLE_STAGE_DIR/copy.txt\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_succeeded(&b, &run, RUN_LIMIT);
    let mut want = b"from the submit dir\n".to_vec();
    want.extend_from_slice(&expected["data/1.txt"]);
    assert_eq!(std::fs::read(b.work().join("copy.txt")).unwrap(), want);
    let broker_uploads = log_lines(&b.dir.path().join("broker.log"), "uploading ");
    assert_eq!(broker_uploads.len(), 1, "{broker_uploads:?}");
    assert!(broker_uploads[0].contains(&sha256_hex(b"from the submit dir\n")));
}

#[test]
fn an_agent_killed_mid_s3_upload_leaves_no_partial_object_and_loses_nothing() {
    let Some(env) = moto() else { return };
    let expected = reference();
    let _one = one_at_a_time();
    let bkt = bucket(&env);
    let url = format!("s3://{bkt}/p");
    let mut b = Broker::start_env(
        &["--heartbeat-timeout", "3", "--heartbeat-interval-ms", "500"],
        &borrowed(&env),
    );
    // Agent a's aws CLI sends at 100 KB/s (the CLI's own setting), so its
    // 1.3 MB uploads take seconds and the kill lands in the middle of them.
    let slow = b.dir.path().join("slow-aws.cfg");
    std::fs::write(&slow, "[default]\ns3 =\n  max_bandwidth = 100KB/s\n").unwrap();
    let mut slow_env = borrowed(&env);
    slow_env.push(("AWS_CONFIG_FILE", slow.to_str().unwrap()));
    s3_agent(&mut b, "a", &url, &slow_env);
    b.wait_agents(1);
    let wf = b.write("flow.yaml", FLOW);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    let a_log = b.dir.path().join("agent-a.log");
    wait_until(RUN_LIMIT, "an upload to start", || {
        !log_lines(&a_log, "uploading ").is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    let a = &mut b.agents[0];
    a.kill().unwrap(); // SIGKILL in the middle of the upload
    a.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Whole or absent: the upload cut off left no object.
    assert_eq!(assert_blobs_whole(&env, &bkt, "p"), 0, "no partial object");
    assert!(results(&b.work()).is_empty(), "nothing promoted");
    s3_agent(&mut b, "c", &url, &borrowed(&env));
    wait_succeeded(&b, &run, RUN_LIMIT);
    assert_eq!(&results(&b.work()), expected);
    assert_counted_once(&b);
    assert_no_leftovers(&b.work());
    assert_eq!(assert_blobs_whole(&env, &bkt, "p"), 9);
    let st: serde_json::Value = serde_json::from_str(&b.ok(&["stats", &run, "--json"])).unwrap();
    assert!(st["lost_attempts"].as_u64() >= Some(1), "{st}");
}

#[test]
fn a_broker_killed_mid_s3_run_loses_nothing_and_counts_nothing_twice() {
    let Some(env) = moto() else { return };
    let expected = reference();
    let _one = one_at_a_time();
    let bkt = bucket(&env);
    let url = format!("s3://{bkt}/p");
    let mut b = Broker::start_env(&[], &borrowed(&env));
    let mut slow = borrowed(&env);
    slow.push(("PAUSE", "1"));
    s3_agent(&mut b, "a", &url, &slow);
    s3_agent(&mut b, "c", &url, &slow);
    b.wait_agents(2);
    let wf = b.write("flow.yaml", FLOW);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(RUN_LIMIT, "transforms to run", || {
        status(&b, &run)["jobs"][1]["counts"]["running"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    b.kill9();
    std::thread::sleep(Duration::from_millis(500));
    b.restart(&borrowed(&env));
    wait_succeeded(&b, &run, RUN_LIMIT);
    assert_eq!(&results(&b.work()), expected);
    assert_counted_once(&b);
    assert_no_leftovers(&b.work());
    assert_eq!(assert_blobs_whole(&env, &bkt, "p"), 9);
}

/// Runs `workflow` (one job, `name`) on a fresh broker (`benv`) and one
/// agent with `--storage url` (`aenv`) until it fails; its `analyze` and the
/// task's `why`.
fn failing_run(
    benv: &[(&str, &str)],
    url: &str,
    aenv: &[(&str, &str)],
    workflow: &str,
    name: &str,
) -> (Broker, String, String) {
    let mut b = Broker::start_env(&[], benv);
    s3_agent(&mut b, "a", url, aenv);
    b.wait_agents(1);
    let wf = b.write("one.yaml", workflow);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_until(Duration::from_secs(90), "the run to fail", || {
        status(&b, &run)["state"] == "failed"
    });
    let analyze = stdout(&b.cli(&["analyze", &run]));
    let why = b.ok(&["why", &format!("{run}/{name}/0")]);
    (b, analyze, why)
}

const ONE: &str = "workflow: one\njobs:\n  - name: make\n    outputs: [o.txt]\n    command: [sh, -c, \"echo hi > $SCALABLE_STAGE_DIR/o.txt\"]\n";

#[test]
fn s3_failures_end_the_task_with_the_object_key_and_the_clis_error_line() {
    let Some(env) = moto() else { return };
    // A bucket that does not exist: the upload fails with S3's own words,
    // said by analyze and why in one line with the object's key.
    let url = "s3://no-such-bucket-scalable/p";
    let (_b, analyze, why) = failing_run(&borrowed(&env), url, &borrowed(&env), ONE, "make");
    let key = format!(
        "S3 transfer of {url}/blobs/{} failed: ",
        sha256_hex(b"hi\n")
    );
    for said in [&analyze, &why] {
        let line = said
            .lines()
            .find(|l| l.contains(&key))
            .unwrap_or_else(|| panic!("{said}"));
        assert!(line.contains("NoSuchBucket"), "{line}");
    }
    // The upload to the store failed before the broker heard of it: which
    // way and where, not how (the agent's figures, which may or may not
    // have arrived yet, can add what it moved).
    let line = analyze
        .lines()
        .find(|l| l.starts_with("transfer: failed on its outputs"))
        .unwrap_or_else(|| panic!("{analyze}"));
    assert!(line.contains(" on agent a ("), "{line}");
    assert!(!line.contains("through"), "{line}");

    // No aws CLI on the agent's PATH: one line naming storage: and the hint.
    let bkt = bucket(&env);
    let url = format!("s3://{bkt}/p");
    let mut nocli = borrowed(&env);
    nocli.retain(|(k, _)| *k != "PATH");
    nocli.push(("PATH", "/usr/bin:/bin"));
    let (_b, analyze, _) = failing_run(&borrowed(&env), &url, &nocli, ONE, "make");
    assert!(
        analyze.contains(&format!(
            "storage: {url} needs the aws CLI, which is not on this machine's PATH (hint: install it"
        )),
        "{analyze}"
    );

    // Over the staging bound: the broker refuses the output in one line.
    let mut benv = borrowed(&env);
    benv.push(("SCALABLE_STAGE_FILE_BYTES_MAX", "1M"));
    let big = "workflow: big\njobs:\n  - name: big\n    outputs: [big.bin]\n    command: [sh, -c, \"head -c 2097152 /dev/zero > $SCALABLE_STAGE_DIR/big.bin\"]\n";
    let (b, analyze, _) = failing_run(&benv, &url, &borrowed(&env), big, "big");
    assert!(
        analyze.contains("output big.bin is 2M, over the staging limit of 1M a file"),
        "{analyze}"
    );
    // Refused at `CommitVia`: the broker knows the way and what was listed,
    // and still knows it once the agent's figures of the attempt arrived
    // (they are sent only when the attempt timed anything, and came before
    // `analyze` in a CI run once: then they add `0B of 2M`).
    let line = analyze
        .lines()
        .find(|l| l.starts_with("transfer: failed on its outputs"))
        .unwrap_or_else(|| panic!("{analyze}"));
    let way = format!("transfer: failed on its outputs through {url} (1 file, ");
    assert!(
        [
            format!("{way}2M listed) on agent a ("),
            format!("{way}0B of 2M) on agent a ("),
        ]
        .iter()
        .any(|l| line.starts_with(l.as_str())),
        "{line}"
    );
    assert!(!b.work().join("big.bin").exists());
}

#[test]
fn analyze_lists_a_task_waiting_for_its_inputs_through_the_store() {
    let Some(env) = moto() else { return };
    let _one = one_at_a_time();
    let bkt = bucket(&env);
    let url = format!("s3://{bkt}/w");
    let mut b = Broker::start_env(&[], &borrowed(&env));
    s3_agent(&mut b, "a", &url, &borrowed(&env));
    b.wait_agents(1);
    std::fs::write(b.work().join("in.bin"), vec![3u8; 4 << 20]).unwrap();
    let wf = b.write(
        "in.yaml",
        "workflow: in\njobs:\n  - name: use\n    inputs: [in.bin]\n    command: [\"true\"]\n",
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    // The broker puts the input in the store, then the agent gets it: each
    // an `aws` process of a second or more, the window this test looks in.
    let line = format!("{run}/use/0: it waits for its inputs through {url}");
    let mut last = String::new();
    wait_until(
        Duration::from_secs(60),
        "analyze to list the stage-in through the store",
        || {
            last = b.ok(&["analyze", &run]);
            last.contains(&line)
        },
    );
    wait_succeeded(&b, &run, RUN_LIMIT);
    let after = b.ok(&["analyze", &run]);
    assert!(!after.contains("waiting for a transfer"), "{after}");
}
