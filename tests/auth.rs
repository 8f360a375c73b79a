//! A wrong agent token and a wrong fingerprint are refused with one clear line
//! and exit 3, while a good agent keeps working.

use std::time::Duration;

use crate::support::*;

fn token_parts(b: &Broker) -> (String, String, String) {
    let text = std::fs::read_to_string(b.token_file()).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    (parts[0].into(), parts[1].into(), parts[2].into())
}

#[test]
fn wrong_token_and_wrong_fingerprint_are_refused_while_good_agent_works() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1", "--name", "good"]);
    b.wait_agents(1);
    let (addr, fp, _token) = token_parts(&b);

    let bad_token = std::process::Command::new(agent_exe())
        .args(["-c", &addr, "--fingerprint", &fp, "--name", "intruder"])
        .env("SCALABLE_TOKEN", "0".repeat(64))
        .output()
        .unwrap();
    assert_eq!(bad_token.status.code(), Some(3), "{}", stderr(&bad_token));
    let err = stderr(&bad_token);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("token refused"),
        "{err}"
    );

    let wrong_fp = "ab".repeat(32);
    let (_, _, token) = token_parts(&b);
    let bad_fp = std::process::Command::new(agent_exe())
        .args(["-c", &addr, "--fingerprint", &wrong_fp, "--name", "mitm"])
        .env("SCALABLE_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(bad_fp.status.code(), Some(3), "{}", stderr(&bad_fp));
    let err = stderr(&bad_fp);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("fingerprint mismatch"),
        "{err}"
    );

    // The broker logged the refusal and kept serving the good agent.
    assert!(b.log().contains("token refused"), "{}", b.log());
    b.ok(&["submit", "--array", "1-3", "--wait", "--", "true"]);
    let agents = b.ok(&["agents", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&agents).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "good");
}

#[test]
fn cli_with_a_wrong_token_is_refused_with_exit_3() {
    let b = Broker::start();
    let mut access: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.access()).unwrap()).unwrap();
    access["token"] = serde_json::Value::String("f".repeat(64));
    let forged = b.dir.path().join("forged.json");
    std::fs::write(&forged, access.to_string()).unwrap();
    let out = std::process::Command::new(cli_exe())
        .arg("--access")
        .arg(&forged)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
}

#[test]
fn cli_without_a_broker_exits_3_with_a_hint() {
    let b = Broker::start();
    let access = std::fs::read_to_string(b.access()).unwrap();
    drop(b);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    std::fs::write(&path, access).unwrap();
    let start = std::time::Instant::now();
    let out = std::process::Command::new(cli_exe())
        .arg("--access")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn state_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let b = Broker::start();
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(b.state()), 0o700);
    assert_eq!(mode(b.access()), 0o600);
    assert_eq!(mode(b.token_file()), 0o600);
}
