//! Tests of the state dir, tokens and access files (moved out of access.rs to keep it readable).

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn state_dir_is_created_0700_and_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/state");
    ensure_state_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    ensure_state_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn write_private_is_0600_and_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secret");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&path, b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(mode(&path), 0o600);
    let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp file is left behind");
}

#[test]
fn write_private_error_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing-dir/secret");
    let err = write_private(&path, b"x").unwrap_err().to_string();
    assert!(err.starts_with("cannot create "), "{err}");
    assert!(err.contains("missing-dir"), "{err}");
    assert!(err.ends_with("no such file or directory"), "{err}");
}

#[test]
fn tokens_are_random_hex_and_match_their_hash() {
    let a = new_token().unwrap();
    let b = new_token().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 64);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let h = hash_token(&a);
    assert_eq!(h.len(), 64);
    assert!(token_matches(&h, &a));
    assert!(token_matches(&h.to_uppercase(), &a));
    assert!(!token_matches(&h, &b));
    assert!(!token_matches("", &a));
    assert!(!token_matches(&h[..63], &a));
}

#[test]
fn find_access_order_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("access.json");
    fs::write(&file, "{}").unwrap();
    let missing = tmp.path().join("nope.json");
    let find = |explicit: Option<&Path>, env: Option<&Path>| {
        find_access_from(explicit, env.map(Path::to_path_buf), &missing)
    };

    assert_eq!(find(Some(&file), Some(&missing)).unwrap(), file);
    assert_eq!(find(None, Some(&file)).unwrap(), file);
    assert_eq!(find_access_from(None, None, &file).unwrap(), file);
    assert_eq!(
        find_access_from(None, Some("".into()), &file).unwrap(),
        file
    );
    let err = find(Some(&missing), None).unwrap_err().to_string();
    assert!(
        err.contains("nope.json") && err.contains("--access"),
        "{err}"
    );
    let err = find(None, Some(&missing)).unwrap_err().to_string();
    assert!(err.contains("SCALABLE_ACCESS"), "{err}");
}

#[test]
fn default_access_error_text() {
    let tmp = tempfile::tempdir().unwrap();
    let err = find_access_from(None, None, &tmp.path().join(DEFAULT_ACCESS_PATH))
        .unwrap_err()
        .to_string();
    let expected = format!(
        "no broker access file found at {}/./.scalable/access.json (start scalable-broker here, or pass --access FILE / set SCALABLE_ACCESS)",
        tmp.path().display()
    );
    assert_eq!(err, expected);
}

#[test]
fn token_file_round_trip_and_errors() {
    let fp = "ab".repeat(32);
    let t = AgentTokenFile::parse(&format!("host:7420 {fp} secret\n\n")).unwrap();
    assert_eq!(t.address, "host:7420");
    assert_eq!(t.fingerprint, fp);
    assert_eq!(t.token, "secret");
    assert_eq!(AgentTokenFile::parse(&t.render()).unwrap(), t);
    assert!(!format!("{t:?}").contains("secret"));

    let err = |s: &str| AgentTokenFile::parse(s).unwrap_err().to_string();
    assert!(err("").contains("is empty"));
    let e = err("secret\n");
    assert!(e.contains("only a token") && e.contains("address"), "{e}");
    let e = err(&format!("{fp} secret"));
    assert!(e.contains("broker address is missing"), "{e}");
    let e = err("host:1 secret");
    assert!(e.contains("fingerprint is missing"), "{e}");
    let e = err("host:1 xyz secret");
    assert!(e.contains("invalid fingerprint"), "{e}");
    assert!(err(&format!("a {fp} b c")).contains("4 fields"));
}

#[test]
fn load_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("agent.token");
    fs::write(&path, "just-a-token\n").unwrap();
    let e = AgentTokenFile::load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    let e = load_access(&tmp.path().join("access.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read ") && e.contains("access.json"),
        "{e}"
    );
}

#[test]
fn first_start_creates_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (id, secrets, agent_token) = init_or_load(&dir, "10.0.0.1:7420").unwrap();
    let files = StateFiles::new(&dir);
    assert_eq!(mode(&dir), 0o700);
    for f in [
        &files.cert,
        &files.key,
        &files.secrets,
        &files.access,
        &files.agent_token,
    ] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    let access = load_access(&files.access).unwrap();
    assert_eq!(access.address, "10.0.0.1:7420");
    assert_eq!(access.fingerprint, id.fingerprint());
    assert!(token_matches(&secrets.user_token_hash, &access.token));
    assert!(token_matches(&secrets.agent_token_hash, &agent_token));
    assert_ne!(access.token, agent_token);

    let agent = AgentTokenFile::load(&files.agent_token).unwrap();
    assert_eq!(agent.token, agent_token);
    assert_eq!(agent.fingerprint, id.fingerprint());
    assert_eq!(load_secrets(&files.secrets).unwrap(), secrets);
    let on_disk = fs::read_to_string(&files.secrets).unwrap();
    assert!(!on_disk.contains(&agent_token) && !on_disk.contains(&access.token));
}

#[test]
fn restart_reuses_identity_and_tokens_but_updates_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (id1, secrets1, agent1) = init_or_load(&dir, "127.0.0.1:40001").unwrap();
    let user1 = load_access(&StateFiles::new(&dir).access).unwrap().token;

    // Someone loosened things between starts.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let key = StateFiles::new(&dir).key;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();

    let (id2, secrets2, agent2) = init_or_load(&dir, "127.0.0.1:40002").unwrap();
    assert_eq!(id1.fingerprint(), id2.fingerprint());
    assert_eq!(id1.key_der, id2.key_der);
    assert_eq!(secrets1, secrets2);
    assert_eq!(agent1, agent2);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&key), 0o600);

    let files = StateFiles::new(&dir);
    let access = load_access(&files.access).unwrap();
    assert_eq!(access.token, user1);
    assert_eq!(access.address, "127.0.0.1:40002");
    let agent = AgentTokenFile::load(&files.agent_token).unwrap();
    assert_eq!(agent.address, "127.0.0.1:40002");
    assert_eq!(agent.token, agent1);
}

#[test]
fn missing_token_file_issues_a_new_token_only_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (_, s1, agent1) = init_or_load(&dir, "h:1").unwrap();
    fs::remove_file(StateFiles::new(&dir).agent_token).unwrap();
    let (_, s2, agent2) = init_or_load(&dir, "h:1").unwrap();
    assert_ne!(agent1, agent2);
    assert_ne!(s1.agent_token_hash, s2.agent_token_hash);
    assert_eq!(s1.user_token_hash, s2.user_token_hash);
}

#[test]
fn half_identity_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    init_or_load(&dir, "h:1").unwrap();
    fs::remove_file(StateFiles::new(&dir).key).unwrap();
    let e = init_or_load(&dir, "h:1").unwrap_err().to_string();
    assert!(e.contains("has cert.pem but not key.pem"), "{e}");
}

#[test]
fn identity_serves_quic_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    init_or_load(&dir, "h:1").unwrap();
    let (id, _, _) = init_or_load(&dir, "h:1").unwrap();
    tls::server_config(&id).unwrap();
}

#[test]
fn a_bad_certificate_or_key_error_names_its_file_and_gives_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    init_or_load(&dir, "h:1").unwrap();
    let files = StateFiles::new(&dir);
    let good_key = fs::read_to_string(&files.key).unwrap();
    let good_cert = fs::read_to_string(&files.cert).unwrap();
    let hint = "(restore it from a backup, or remove cert.pem and key.pem to make a new identity; agents and users then need the new fingerprint)";

    fs::write(&files.cert, "not a certificate\n").unwrap();
    let e = init_or_load(&dir, "h:1").unwrap_err().to_string();
    let want = format!(
        "{}: invalid certificate: no \"CERTIFICATE\" pem section found {hint}",
        files.cert.display()
    );
    assert_eq!(e, want);

    fs::write(&files.cert, &good_cert).unwrap();
    fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let e = init_or_load(&dir, "h:1").unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: invalid private key", files.key.display())),
        "{e}"
    );
    assert!(e.ends_with(hint), "{e}");

    // PEM that decodes but is no certificate rustls can serve.
    let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    fs::write(&files.key, &good_key).unwrap();
    fs::write(&files.cert, junk).unwrap();
    let e = init_or_load(&dir, "h:1").unwrap_err().to_string();
    assert!(e.starts_with(&files.cert.display().to_string()), "{e}");
    assert!(e.ends_with(hint), "{e}");
}

#[test]
fn a_state_dir_is_new_until_it_holds_a_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let files = StateFiles::new(&dir);
    assert!(files.is_new().unwrap(), "a missing dir is new");
    fs::create_dir_all(&dir).unwrap();
    fs::write(&files.db, b"").unwrap();
    assert!(files.is_new().unwrap(), "a database alone holds no broker");
    init_or_load(&dir, "h:1").unwrap();
    assert!(!files.is_new().unwrap());
}
