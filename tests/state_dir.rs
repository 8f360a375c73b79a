//! The broker's state dir (issue 12): an emptied database is refused rather
//! than taken for a new store, every file in it is private whatever the
//! umask, and cached outputs stay inside the task's directory; one broker
//! holds it at a time (issue 13).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Starts a broker on `b`'s state dir under `sh -c 'umask U; exec …'`.
fn spawn_under_umask(b: &Broker, umask: &str, extra: &[&str]) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(b.dir.path().join("broker.log"))
        .unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(broker_exe())
        .arg("--state-dir")
        .arg(b.state())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("SCALABLE_AGENT_EXE", agent_exe())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start broker")
}

#[test]
fn a_zero_byte_database_beside_an_existing_identity_is_refused() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    b.ok(&["submit", "--wait", "--", "true"]);
    b.kill9();
    let db = b.state().join("broker.db");
    std::fs::write(&db, b"").unwrap();
    for side in ["broker.db-wal", "broker.db-shm"] {
        let _ = std::fs::remove_file(b.state().join(side));
    }

    let out = b.dir.path().join("restart.err");
    let mut child = Command::new(broker_exe())
        .arg("--state-dir")
        .arg(b.state())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&out).unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the broker must refuse to start; it said:\n{stderr}"
    );
    let want = format!(
        "error: database {}: is empty (0 bytes) but {} holds an existing broker's certificate and tokens: taking it for a new store would restart the ids and lose every run's history (restore broker.db from a backup; to start an empty history with the same identity, delete the file)",
        db.display(),
        b.state().display()
    );
    assert_eq!(stderr.lines().last(), Some(want.as_str()), "{stderr}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left untouched");
}

/// Every file under `dir` with a mode other than 0600, every directory
/// other than 0700.
fn loose_entries(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {mode:o}", e.path().display()));
        }
        if meta.is_dir() {
            loose_entries(&e.path(), out);
        }
    }
}

#[test]
fn files_under_the_state_dir_are_private_whatever_the_umask() {
    let mut b = Broker::start();
    b.kill9();
    std::fs::remove_dir_all(b.state()).unwrap();
    b.child = spawn_under_umask(&b, "000", &["--local-agents", "1"]);
    wait_until(Duration::from_secs(20), "access.json", || {
        b.access().exists()
    });
    b.wait_agents(1);
    let wf = b.write(
        "cached.yaml",
        "workflow: private\njobs:\n  - name: j\n    cache: true\n    outputs: [out.txt]\n    command: [sh, -c, \"echo data > out.txt\"]\n",
    );
    b.ok(&["submit", &wf, "--wait"]);
    wait_until(Duration::from_secs(10), "a cache entry", || {
        b.db()
            .query_row("SELECT COUNT(*) FROM cache_entries", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
            == 1
    });
    let mut loose = Vec::new();
    assert_eq!(
        std::fs::metadata(b.state()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    loose_entries(&b.state(), &mut loose);
    assert!(loose.is_empty(), "not private: {loose:#?}");
    for must in ["broker.db", "cache", "local-agents/agent-1.log"] {
        assert!(b.state().join(must).exists(), "{must} was checked");
    }
}

#[test]
fn cached_outputs_outside_the_task_directory_are_refused_at_submit() {
    let b = Broker::start();
    for (name, output) in [("up", "../escape.txt"), ("abs", "/tmp/scalable-escape.txt")] {
        let wf = b.write(
            &format!("{name}.yaml"),
            &format!(
                "workflow: {name}\njobs:\n  - name: j\n    cache: true\n    outputs: [\"{output}\"]\n    command: [\"true\"]\n"
            ),
        );
        let out = b.cli(&["submit", &wf]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let want = format!(
            "error: {name}.yaml: job \"j\" task 0: output \"{output}\" is outside the task's directory (declare outputs inside the task's directory {}; no output_roots in the broker's manifest)\n",
            b.work().display()
        );
        assert_eq!(stderr(&out), want);
    }
    let out = b.ok(&["status", "--json"]);
    assert!(
        !out.contains("\"up\"") && !out.contains("\"abs\""),
        "nothing stored: {out}"
    );
}

/// Every entry under `dir` with its size, modification time and content.
fn snapshot(dir: &Path, out: &mut Vec<(String, u64, std::time::SystemTime, Vec<u8>)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let content = if meta.is_file() {
            std::fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        let name = e.path().display().to_string();
        out.push((name, meta.len(), meta.modified().unwrap(), content));
        if meta.is_dir() {
            snapshot(&e.path(), out);
        }
    }
}

/// Regression (issue 13, bug 2): a second broker on the same state dir (on
/// another port) rewrote `access.json` and `agent.token`, and every CLI call
/// then dialled its dead port. It is refused with one line naming the first
/// broker, before it writes anything.
#[test]
fn a_second_broker_on_the_same_state_dir_is_refused_and_changes_nothing() {
    let b = Broker::start();
    let first = b.address();
    b.ok(&["status"]);
    let mut before = Vec::new();
    snapshot(&b.state(), &mut before);
    let mut second = Command::new(broker_exe());
    second
        .arg("--state-dir")
        .arg(b.state())
        .args(["--listen", "127.0.0.1:0"])
        .env("SCALABLE_AGENT_EXE", agent_exe());
    let (out, _) = run_within(second, Duration::from_secs(20));
    let out = out.expect("the second broker must refuse to start, not serve");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let want = format!(
        "error: state dir {} is in use by another broker (pid {}, listening on {first}); stop that broker first, or give this one another --state-dir",
        b.state().display(),
        b.child.id()
    );
    assert_eq!(
        stderr(&out).lines().last(),
        Some(want.as_str()),
        "{}",
        stderr(&out)
    );
    let mut after = Vec::new();
    snapshot(&b.state(), &mut after);
    let names = |s: &[(String, u64, std::time::SystemTime, Vec<u8>)]| {
        s.iter().map(|e| e.0.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&after), names(&before), "no file added or removed");
    assert!(after == before, "a file of the state dir was modified");
    assert_eq!(b.address(), first);
    b.ok(&["status"]);
}
