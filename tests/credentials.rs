//! Regression (issue 12, defect 4): the agent token never reaches a task,
//! however the agent got it: `SCALABLE_TOKEN` (the Kubernetes and Fargate
//! pilots), `--token-file` or `--token`. A task that prints its environment,
//! the token file its variable names and the agent's own `/proc` view puts the
//! token neither into `scalable logs` nor into the broker's database.

use std::process::{Command, Stdio};

use crate::support::*;

/// What a curious task prints: its environment, the file `SCALABLE_TOKEN_FILE`
/// names (if it is set), and the agent's start-up environment and argv.
const SNOOP: &str = "env; cat \"${SCALABLE_TOKEN_FILE:-/nonexistent}\"; \
    tr '\\0' '\\n' < /proc/$PPID/environ; tr '\\0' ' ' < /proc/$PPID/cmdline; echo";

enum Delivery {
    Env,
    File,
    Flag,
}

fn token_parts(b: &Broker) -> (String, String, String) {
    let text = std::fs::read_to_string(b.token_file()).unwrap();
    let p: Vec<&str> = text.split_whitespace().collect();
    (p[0].into(), p[1].into(), p[2].into())
}

fn start_agent(b: &mut Broker, how: Delivery) {
    let (addr, fp, token) = token_parts(b);
    let log = std::fs::File::create(b.dir.path().join("agent-snooped.log")).unwrap();
    let mut cmd = Command::new(agent_exe());
    cmd.args(["--cpus", "1"]);
    match how {
        Delivery::Env => {
            cmd.args(["-c", &addr])
                .env("SCALABLE_TOKEN", &token)
                .env("SCALABLE_FINGERPRINT", &fp);
        }
        Delivery::File => {
            cmd.env("SCALABLE_TOKEN_FILE", b.token_file());
        }
        Delivery::Flag => {
            cmd.args(["-c", &addr, "--fingerprint", &fp, "--token", &token]);
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start agent");
    b.agents.push(child);
    b.wait_agents(1);
}

/// Every file of the broker's state dir whose bytes contain `needle`.
fn state_files_containing(b: &Broker, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(b.state()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "agent.token" || !name.starts_with("broker.db") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(name);
        }
    }
    hits
}

fn token_stays_with_the_agent(how: Delivery) {
    let mut b = Broker::start();
    start_agent(&mut b, how);
    let (_, _, token) = token_parts(&b);
    let out = b.ok(&[
        "submit", "--json", "--array", "1-1", "--name", "snoop", "--", "sh", "-c", SNOOP,
    ]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let run = v["run"].to_string();
    b.ok(&["wait", &run]);
    let logs = b.ok(&["logs", &format!("{run}/snoop/0")]);
    // The task ran and printed its environment and the agent's argv.
    assert!(logs.contains("SCALABLE_ATTEMPT_ID="), "{logs}");
    assert!(logs.contains("scalable-agent"), "{logs}");
    assert!(
        !logs.contains(&token),
        "the token is in the task's output:\n{logs}"
    );
    let errors = stdout(&b.cli(&["logs", &format!("{run}/snoop/0"), "--stderr"]));
    assert!(!errors.contains(&token), "{errors}");
    let hits = state_files_containing(&b, &token);
    assert!(hits.is_empty(), "the token is in {hits:?}");
}

#[test]
fn env_delivered_token_never_reaches_a_task() {
    token_stays_with_the_agent(Delivery::Env);
}

#[test]
fn file_delivered_token_never_reaches_a_task() {
    token_stays_with_the_agent(Delivery::File);
}

#[test]
fn flag_delivered_token_never_reaches_a_task() {
    token_stays_with_the_agent(Delivery::Flag);
}
