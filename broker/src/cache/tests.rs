//! Tests of keys, blobs, the table and probes (moved out of cache.rs).

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn key(dir: &Path, argv: &[&str], inputs: &[&str]) -> CacheKey {
    compute_key(&s(argv), Some("img"), &[], dir, &s(inputs)).unwrap()
}

#[test]
fn same_inputs_give_the_same_key() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("a.csv"), "1,2\n").unwrap();
    let k1 = key(d.path(), &["sim", "a.csv"], &["a.csv"]);
    let k2 = key(d.path(), &["sim", "a.csv"], &["a.csv"]);
    assert_eq!(k1, k2);
    assert_eq!(k1.key.len(), 64);
    // A file input is the plain SHA-256 of its content (sha256sum of "1,2\n").
    assert_eq!(
        k1.inputs,
        vec![(
            "a.csv".to_string(),
            "52186c933993da4082b3cdc7c40bb4bf735b391ff54a2ef78c037dda6c38a680".to_string()
        )]
    );
    assert!(explain_change(&k1, &k2).is_empty());
}

#[test]
fn argv_order_changes_the_key() {
    let d = tempfile::tempdir().unwrap();
    let k1 = key(d.path(), &["a", "b"], &[]);
    let k2 = key(d.path(), &["b", "a"], &[]);
    assert_ne!(k1.key, k2.key);
    assert_eq!(explain_change(&k1, &k2), vec!["command (argv) changed"]);
    // Length prefixes: ["ab"] and ["a", "b"] differ.
    assert_ne!(
        key(d.path(), &["ab"], &[]).key,
        key(d.path(), &["a", "b"], &[]).key
    );
}

#[test]
fn env_order_does_not_change_the_key() {
    let d = tempfile::tempdir().unwrap();
    let argv = s(&["x"]);
    let e1 = env(&[("A", "1"), ("B", "2")]);
    let e2 = env(&[("B", "2"), ("A", "1")]);
    let k1 = compute_key(&argv, None, &e1, d.path(), &[]).unwrap();
    let k2 = compute_key(&argv, None, &e2, d.path(), &[]).unwrap();
    assert_eq!(k1, k2);
    let e3 = env(&[("A", "1"), ("B", "3")]);
    let k3 = compute_key(&argv, None, &e3, d.path(), &[]).unwrap();
    assert_eq!(explain_change(&k1, &k3), vec!["environment changed"]);
    // The last value of a repeated name wins, as in a process environment.
    let e4 = env(&[("B", "9"), ("A", "1"), ("B", "2")]);
    assert_eq!(compute_key(&argv, None, &e4, d.path(), &[]).unwrap(), k1);
    let with_image = compute_key(&argv, Some("busybox"), &e1, d.path(), &[]).unwrap();
    assert_eq!(explain_change(&k1, &with_image), vec!["image changed"]);
}

#[test]
fn one_changed_input_byte_changes_only_that_input() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("data")).unwrap();
    fs::write(d.path().join("data/3.csv"), "abc").unwrap();
    fs::write(d.path().join("data/4.csv"), "def").unwrap();
    let inputs = ["data/4.csv", "data/3.csv"];
    let k1 = key(d.path(), &["agg"], &inputs);
    fs::write(d.path().join("data/3.csv"), "abd").unwrap();
    let k2 = key(d.path(), &["agg"], &inputs);
    assert_ne!(k1.key, k2.key);
    assert_eq!(
        (&k1.argv, &k1.image, &k1.env),
        (&k2.argv, &k2.image, &k2.env)
    );
    assert_eq!(k1.inputs[0].0, "data/3.csv");
    assert_ne!(k1.inputs[0].1, k2.inputs[0].1);
    assert_eq!(k1.inputs[1], k2.inputs[1]);
    assert_eq!(explain_change(&k1, &k2), vec!["input data/3.csv changed"]);
    // Declared order does not matter; added and removed inputs are named.
    let k3 = key(d.path(), &["agg"], &["data/3.csv"]);
    assert_eq!(explain_change(&k2, &k3), vec!["input data/4.csv removed"]);
    assert_eq!(explain_change(&k3, &k2), vec!["input data/4.csv added"]);
    assert_eq!(key(d.path(), &["agg"], &["data/3.csv", "data/4.csv"]), k2);
}

#[test]
fn a_missing_input_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let e = compute_key(&s(&["x"]), None, &[], d.path(), &s(&["nope.csv"])).unwrap_err();
    assert_eq!(e.to_string(), "input nope.csv: does not exist");
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = compute_key(&s(&["x"]), None, &[], d.path(), &s(&["fifo"])).unwrap_err();
    assert_eq!(e.to_string(), "input fifo: not a regular file or directory");
}

#[test]
fn a_directory_input_hashes_its_files_and_names() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("in");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/a"), "1").unwrap();
    fs::write(dir.join("b"), "2").unwrap();
    let k1 = key(d.path(), &["x"], &["in"]);
    assert_eq!(key(d.path(), &["x"], &["in"]), k1);
    fs::write(dir.join("sub/a"), "3").unwrap();
    let k2 = key(d.path(), &["x"], &["in"]);
    assert_eq!(explain_change(&k1, &k2), vec!["input in changed"]);
    fs::rename(dir.join("b"), dir.join("c")).unwrap();
    assert_ne!(key(d.path(), &["x"], &["in"]), k2);
    // An absolute path is not joined onto the cwd.
    let abs = dir.to_str().unwrap().to_string();
    let other = tempfile::tempdir().unwrap();
    assert_eq!(
        compute_key(
            &s(&["x"]),
            None,
            &[],
            other.path(),
            std::slice::from_ref(&abs)
        )
        .unwrap()
        .inputs[0]
            .1,
        compute_key(&s(&["x"]), None, &[], d.path(), &s(&["in"]))
            .unwrap()
            .inputs[0]
            .1
    );
}

#[test]
fn save_delete_restore_gives_the_bytes_back() {
    let d = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(d.path().join("state/cache"));
    let cwd = d.path().join("work");
    fs::create_dir_all(cwd.join("out")).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(cwd.join("out/r.bin"), &data).unwrap();
    fs::write(cwd.join("s.txt"), "same").unwrap();
    let saved = blobs
        .save_outputs(&cwd, &s(&["out/r.bin", "s.txt"]))
        .unwrap();
    assert_eq!(saved[0].bytes, 200_000);
    assert_eq!(saved[0].sha256, hash_file(&cwd.join("out/r.bin")).unwrap());
    assert!(blobs.contains(&saved[0].sha256));
    let name = &saved[0].sha256;
    assert_eq!(
        blobs.blob_path(name),
        d.path()
            .join("state/cache")
            .join(&name[..2])
            .join(&name[2..])
    );
    // Saving again keeps the one blob and leaves no temporary file behind.
    assert_eq!(
        blobs
            .save_outputs(&cwd, &s(&["out/r.bin", "s.txt"]))
            .unwrap(),
        saved
    );
    let leftovers: Vec<_> = fs::read_dir(blobs.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".scalable-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    fs::remove_dir_all(cwd.join("out")).unwrap();
    fs::write(cwd.join("s.txt"), "changed").unwrap();
    assert_eq!(blobs.restore_outputs(&cwd, &saved).unwrap(), 2);
    assert_eq!(fs::read(cwd.join("out/r.bin")).unwrap(), data);
    assert_eq!(fs::read(cwd.join("s.txt")).unwrap(), b"same");
    let in_out: Vec<_> = fs::read_dir(cwd.join("out")).unwrap().collect();
    assert_eq!(in_out.len(), 1, "only the restored file, no temporary");
}

#[test]
fn restore_does_not_rewrite_a_matching_file() {
    let d = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(d.path().join("cache"));
    let f = d.path().join("o.txt");
    fs::write(&f, "result").unwrap();
    let saved = blobs.save_outputs(d.path(), &s(&["o.txt"])).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f).unwrap());
    assert_eq!(blobs.restore_outputs(d.path(), &saved).unwrap(), 0);
    let m = fs::metadata(&f).unwrap();
    assert_eq!(m.modified().unwrap(), old);
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&m), ino);
}

#[test]
fn outputs_must_be_files_and_blobs_must_be_intact() {
    let d = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(d.path().join("cache"));
    fs::create_dir(d.path().join("dir")).unwrap();
    let e = blobs.save_outputs(d.path(), &s(&["dir"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "output dir is a directory; cache supports files"
    );
    let e = blobs.save_outputs(d.path(), &s(&["gone"])).unwrap_err();
    assert_eq!(e.to_string(), "output gone: does not exist");

    fs::write(d.path().join("o"), "good").unwrap();
    let saved = blobs.save_outputs(d.path(), &s(&["o"])).unwrap();
    let blob = blobs.blob_path(&saved[0].sha256);
    fs::write(&blob, "evil").unwrap();
    fs::remove_file(d.path().join("o")).unwrap();
    let e = blobs.restore_outputs(d.path(), &saved).unwrap_err();
    assert!(matches!(e, CacheError::BlobCorrupt { .. }), "{e}");
    assert!(!blob.exists(), "a corrupt blob is removed");
    assert!(!d.path().join("o").exists(), "nothing corrupt is restored");
    let e = blobs.restore_outputs(d.path(), &saved).unwrap_err();
    assert!(matches!(e, CacheError::BlobMissing { .. }), "{e}");
    let bad = SavedOutput {
        path: "o".into(),
        sha256: "../../o".into(),
        bytes: 4,
    };
    assert!(!blobs.contains(&bad.sha256));
    let e = blobs.restore_outputs(d.path(), &[bad]).unwrap_err();
    assert!(matches!(e, CacheError::BlobMissing { .. }), "{e}");
}

fn memory_db() -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch(SCHEMA).unwrap(); // idempotent, as the store reopens
    conn
}

fn entry(k: &CacheKey, idx: u64, task_id: u64, at_ms: u64) -> Entry {
    Entry {
        key: k.key.clone(),
        workflow: "wf".into(),
        job: "sim".into(),
        idx,
        task_id,
        attempt_id: task_id * 10,
        parts: k.clone(),
        outputs: vec![SavedOutput {
            path: "out.txt".into(),
            sha256: "ab".repeat(32),
            bytes: 3,
        }],
        created_at_ms: at_ms,
    }
}

#[test]
fn entries_round_trip_through_the_table() {
    let d = tempfile::tempdir().unwrap();
    let conn = memory_db();
    let k1 = key(d.path(), &["sim", "1"], &[]);
    let k2 = key(d.path(), &["sim", "2"], &[]);
    let k3 = key(d.path(), &["sim", "3"], &[]);
    assert_eq!(lookup(&conn, &k1.key).unwrap(), None);
    assert_eq!(latest_for(&conn, "wf", "sim", 0).unwrap(), None);
    let e1 = entry(&k1, 0, 1, 1_000);
    insert(&conn, &e1).unwrap();
    assert_eq!(lookup(&conn, &k1.key).unwrap(), Some(e1.clone()));
    insert(&conn, &entry(&k2, 0, 2, 2_000)).unwrap();
    insert(&conn, &entry(&k3, 1, 3, 3_000)).unwrap();
    let latest = latest_for(&conn, "wf", "sim", 0).unwrap().unwrap();
    assert_eq!((latest.task_id, latest.parts), (2, k2.clone()));
    assert_eq!(
        latest_for(&conn, "wf", "sim", 1).unwrap().unwrap().task_id,
        3
    );
    assert_eq!(latest_for(&conn, "wf", "other", 0).unwrap(), None);
    // The same key again replaces the row (and becomes the latest).
    let again = entry(&k1, 0, 4, 4_000);
    insert(&conn, &again).unwrap();
    assert_eq!(lookup(&conn, &k1.key).unwrap(), Some(again.clone()));
    assert_eq!(latest_for(&conn, "wf", "sim", 0).unwrap(), Some(again));
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM cache_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
}

fn request(cwd: &Path, n: &str) -> ProbeRequest {
    ProbeRequest {
        workflow: "wf".into(),
        job: "sim".into(),
        idx: 3,
        argv: s(&["sim", n]),
        image: None,
        env: env(&[("SEED", "1")]),
        cwd: cwd.to_path_buf(),
        inputs: s(&["in.csv"]),
        outputs: s(&["out/r.txt"]),
    }
}

/// Runs the "task" (writes its output) and records it, as the broker does
/// after a success.
fn run_and_record(conn: &rusqlite::Connection, blobs: &Blobs, req: &ProbeRequest, task_id: u64) {
    let ProbeAnswer::Miss { key, .. } = probe(conn, blobs, req) else {
        panic!("expected a miss");
    };
    fs::create_dir_all(req.cwd.join("out")).unwrap();
    fs::write(req.cwd.join("out/r.txt"), format!("result {}", req.argv[1])).unwrap();
    record_success(
        conn,
        blobs,
        &req.workflow,
        &req.job,
        req.idx,
        task_id,
        task_id * 10,
        &key,
        &req.cwd,
        &req.outputs,
        task_id * 1_000,
    )
    .unwrap();
}

#[test]
fn probe_misses_then_hits_and_restores() {
    let d = tempfile::tempdir().unwrap();
    let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
    let cwd = d.path().join("w");
    fs::create_dir(&cwd).unwrap();
    fs::write(cwd.join("in.csv"), "a,b").unwrap();
    let req = request(&cwd, "1");
    match probe(&conn, &blobs, &req) {
        ProbeAnswer::Miss { why, .. } => assert_eq!(why, "no earlier run of this task"),
        other => panic!("{other:?}"),
    }
    run_and_record(&conn, &blobs, &req, 7);

    // Outputs already in place: a hit that writes nothing.
    match probe(&conn, &blobs, &req) {
        ProbeAnswer::Hit {
            from_task,
            restored,
            ..
        } => assert_eq!((from_task, restored), (7, 0)),
        other => panic!("{other:?}"),
    }
    // Outputs gone (a fresh run dir): a hit that restores them.
    fs::remove_dir_all(cwd.join("out")).unwrap();
    match probe(&conn, &blobs, &req) {
        ProbeAnswer::Hit {
            key,
            from_task,
            restored,
        } => {
            assert_eq!((from_task, restored), (7, 1));
            assert_eq!(lookup(&conn, &key.key).unwrap().unwrap().task_id, 7);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs::read_to_string(cwd.join("out/r.txt")).unwrap(),
        "result 1"
    );
}

#[test]
fn probe_explains_a_miss_by_the_parts_that_changed() {
    let d = tempfile::tempdir().unwrap();
    let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
    fs::write(d.path().join("in.csv"), "a,b").unwrap();
    run_and_record(&conn, &blobs, &request(d.path(), "1"), 1);
    fs::write(d.path().join("in.csv"), "a,c").unwrap();
    let mut req = request(d.path(), "2");
    req.image = Some("busybox".into());
    match probe(&conn, &blobs, &req) {
        ProbeAnswer::Miss { why, .. } => assert_eq!(
            why,
            "cache miss: command (argv) changed, image changed, input in.csv changed"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn probe_is_unavailable_without_an_input_and_misses_without_blobs() {
    let d = tempfile::tempdir().unwrap();
    let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
    let req = request(d.path(), "1");
    assert_eq!(
        probe(&conn, &blobs, &req),
        ProbeAnswer::Unavailable {
            why: "cache unavailable: input in.csv: does not exist".into()
        }
    );
    fs::write(d.path().join("in.csv"), "a,b").unwrap();
    run_and_record(&conn, &blobs, &req, 1);
    // A newly declared output was never saved: run again.
    let mut more = req.clone();
    more.outputs.push("extra.txt".into());
    match probe(&conn, &blobs, &more) {
        ProbeAnswer::Miss { why, .. } => assert_eq!(
            why,
            "cache miss: output extra.txt was not saved by the cached run"
        ),
        other => panic!("{other:?}"),
    }
    // The cache directory was cleaned: a miss, nothing touched.
    fs::remove_dir_all(blobs.root()).unwrap();
    fs::remove_file(d.path().join("out/r.txt")).unwrap();
    match probe(&conn, &blobs, &req) {
        ProbeAnswer::Miss { why, .. } => assert_eq!(
            why,
            "cache miss: the saved copy of output out/r.txt is gone from the cache directory"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!d.path().join("out/r.txt").exists());
    // A directory output cannot be recorded; the error names it.
    let ProbeAnswer::Miss { key, .. } = probe(&conn, &blobs, &req) else {
        panic!("expected a miss");
    };
    let e = record_success(
        &conn,
        &blobs,
        "wf",
        "sim",
        3,
        2,
        20,
        &key,
        d.path(),
        &s(&["out"]),
        5,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "output out is a directory; cache supports files"
    );
}

#[test]
fn outputs_outside_the_task_directory_are_neither_saved_nor_restored() {
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path().join("work");
    fs::create_dir_all(&cwd).unwrap();
    fs::write(d.path().join("secret.txt"), "not the task's").unwrap();
    let blobs = Blobs::new(d.path().join("cache"));
    for bad in [
        "../secret.txt",
        &d.path().join("secret.txt").display().to_string(),
    ] {
        let e = blobs
            .save_outputs(&cwd, &s(&[bad]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is outside the task's directory"), "{e}");
    }
    assert!(
        !d.path().join("cache").exists(),
        "nothing was read into the cache"
    );

    // A saved entry whose paths escape (an older broker wrote it, or a row
    // was edited) restores nothing outside.
    fs::write(cwd.join("ok.txt"), "fine").unwrap();
    let saved = blobs.save_outputs(&cwd, &s(&["ok.txt"])).unwrap();
    for bad in [
        "../escaped.txt",
        "/tmp/../escaped-abs.txt",
        "a/../../escaped.txt",
    ] {
        let mut entry = saved.clone();
        entry[0].path = bad.to_string();
        let e = blobs.restore_outputs(&cwd, &entry).unwrap_err().to_string();
        assert!(e.starts_with(&format!("output {bad:?} is outside")), "{e}");
    }
    assert!(!d.path().join("escaped.txt").exists());
    assert!(!Path::new("/escaped-abs.txt").exists());

    // The broker's manifest may allow a root.
    let shared = d.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    let manifest_roots =
        crate::output_roots::OutputRoots::from_manifest(Some(&manifest_with_root(&shared)));
    let blobs = Blobs::new(d.path().join("cache")).with_output_roots(manifest_roots);
    let mut entry = saved.clone();
    entry[0].path = shared.join("out.txt").display().to_string();
    assert_eq!(blobs.restore_outputs(&cwd, &entry).unwrap(), 1);
    assert_eq!(fs::read_to_string(shared.join("out.txt")).unwrap(), "fine");
}

fn manifest_with_root(root: &Path) -> scalable_common::manifest::Manifest {
    let text = format!(
        "version: 1\nproject: {{name: p, output_roots: [{}]}}\ntargets:\n  t: {{provider: local}}\n",
        root.display()
    );
    let opts = scalable_common::manifest::LoadOptions {
        target: None,
        overlays: &[],
        env: &|_: &str| None,
    };
    scalable_common::manifest::load_manifest("m.yaml", &text, &opts).unwrap()
}

#[test]
fn blobs_are_private_files_in_private_directories() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("o.txt"), "x").unwrap();
    let blobs = Blobs::new(d.path().join("state/cache"));
    let saved = blobs.save_outputs(d.path(), &s(&["o.txt"])).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let blob = blobs.blob_path(&saved[0].sha256);
    assert_eq!(mode(&blob), 0o600);
    assert_eq!(mode(blob.parent().unwrap()), 0o700);
    assert_eq!(mode(&d.path().join("state/cache")), 0o700);
}
