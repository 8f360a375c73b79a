//! Warm Python tasks (issue 21): `@scalable-agent warm-exec -- PY -m
//! scalable._worker IN OUT` runs the call in a child forked from the agent's
//! zygote (agent/src/warm.rs, python/scalable/_zygote.py). A real broker, a
//! real agent and the real `python3` with the repository's `scalable` package:
//! the value and the exception come back, the child is bound to the task's
//! cores, cancel, walltime and the memory limit reach it, a killed zygote or
//! one that cannot start leaves the task to run cold, and a SIGKILLed agent
//! takes the child and the zygote along.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The functions the tasks call, importable by reference from the work dir.
const TASKS: &str = r#"
import os, time

def whoami(tag):
    print(f"whoami {tag} on stdout")
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"tag": tag, "pid": os.getpid(), "parent": parent,
            "pgrp": os.getpgrp(), "cpus": sorted(os.sched_getaffinity(0)),
            "cpu_list": os.environ.get("SCALABLE_CPU_LIST"),
            "attempt": os.environ.get("SCALABLE_ATTEMPT_ID"), "cwd": os.getcwd()}

def boom(x):
    raise ValueError(f"boom {x}")

def sleeper(name):
    with open(name, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(100)

def hog():
    x = bytearray(400 * 1024 * 1024)
    time.sleep(20)
    return len(x)
"#;

fn repo_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python")
}

/// The interpreter itself (a pyenv shim is a shell script around it).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `tasks.py` and the call files `NAME.in` (the client's layout).
fn write_calls(b: &Broker, calls: &[(&str, &str, &str)]) {
    std::fs::write(b.work().join("tasks.py"), TASKS).unwrap();
    let mut script = String::from("import sys\nfrom scalable import _payload\nimport tasks\n");
    for (name, func, arg) in calls {
        script.push_str(&format!(
            "_payload.write_call('.', '{name}', tasks.{func}, ({arg}), {{}}, '.')\n"
        ));
    }
    let out = Command::new(python())
        .args(["-c", &script])
        .env("PYTHONPATH", pythonpath(b))
        .current_dir(b.work())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn pythonpath(b: &Broker) -> String {
    format!("{}:{}", repo_python().display(), b.work().display())
}

/// A workflow job running call `name` warm.
fn warm_job(b: &Broker, name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    command: [\"@scalable-agent\", warm-exec, --, \"{py}\", -m, scalable._worker, {name}.in, {name}.out]\n    outputs: [{name}.out]\n    env: {{PYTHONPATH: \"{pp}\"}}\n{extra}",
        py = python(),
        pp = pythonpath(b)
    )
}

fn submit(b: &Broker, jobs: &[String]) -> String {
    let wf = b.write(
        "warm.yaml",
        &format!("workflow: warm\njobs:\n{}", jobs.concat()),
    );
    b.ok(&["submit", &wf]).trim().to_string()
}

/// The value of a successful call, as JSON (read back by Python).
fn value(b: &Broker, name: &str) -> Value {
    let script = format!(
        "import pickle, json; k, v = pickle.load(open('{name}.out', 'rb'))[:2]; assert k == 'ok'; print(json.dumps(v))"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .current_dir(b.work())
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn analyze(b: &Broker, run: &str) -> Value {
    serde_json::from_str(&stdout(&b.cli(&["analyze", run, "--json"]))).unwrap()
}

fn failed<'a>(v: &'a Value, run: &str, job: &str) -> &'a Value {
    v["failed_tasks"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["path"] == format!("{run}/{job}/0")))
        .unwrap_or_else(|| panic!("no failed {job}: {v}"))
}

/// The zygote serving `whoami`'s result (its parent), by its command line.
fn zygote_of(v: &Value) -> i32 {
    let parent = v["parent"].as_str().unwrap();
    assert!(parent.contains("-m scalable._zygote"), "ran cold: {v}");
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).replace('\0', " ").trim() == parent.trim()
            })
        });
    pid.expect("the zygote runs")
}

#[test]
fn a_warm_call_returns_its_value_bound_to_its_cores_and_its_exception() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    write_calls(
        &b,
        &[
            ("one", "whoami", "'one',"),
            ("two", "whoami", "'two',"),
            ("bad", "boom", "7,"),
        ],
    );
    let run = submit(
        &b,
        &[
            warm_job(&b, "one", "    resources: {cpus: 1}\n"),
            warm_job(&b, "two", "    resources: {cpus: 1}\n"),
            warm_job(&b, "bad", ""),
        ],
    );
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (one, two) = (value(&b, "one"), value(&b, "two"));
    for v in [&one, &two] {
        // Forked by the zygote, in the task's (the trampoline's) process group,
        // bound to the task's one core, with the attempt's environment.
        zygote_of(v);
        assert_ne!(v["pgrp"], v["pid"], "{v}");
        let cpus = v["cpus"].as_array().unwrap();
        assert_eq!(cpus.len(), 1, "{v}");
        assert_eq!(v["cpu_list"], cpus[0].to_string(), "{v}");
        assert!(v["attempt"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
        assert_eq!(
            v["cwd"],
            b.work().canonicalize().unwrap().display().to_string()
        );
    }
    assert_eq!(zygote_of(&one), zygote_of(&two), "one zygote per agent");
    let logs = stdout(&b.cli(&["logs", &format!("{run}/one/0")]));
    assert!(
        logs.contains("whoami one on stdout"),
        "the task's stdout file: {logs}"
    );
    let report = analyze(&b, &run);
    let bad = failed(&report, &run, "bad");
    assert_eq!(bad["attempts"][0]["exit_code"], 1, "{bad}");
    let tail = bad["stderr_tail"].as_str().unwrap_or_default();
    assert!(
        tail.contains("ValueError: boom 7") && tail.contains("in boom"),
        "{bad}"
    );
    assert!(
        b.work().join("bad.err.1").exists(),
        "the pickled exception for the client"
    );
}

#[test]
fn cancel_walltime_and_the_memory_limit_reach_a_warm_call() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "3", "--memory", "2G"]);
    b.wait_agents(1);
    write_calls(
        &b,
        &[
            ("slow", "sleeper", "'slow.pid',"),
            ("hog", "hog", ""),
            ("held", "sleeper", "'held.pid',"),
        ],
    );
    let run = submit(
        &b,
        &[
            warm_job(&b, "slow", "    walltime: 2s\n"),
            warm_job(&b, "hog", "    resources: {memory: 100M}\n"),
        ],
    );
    let slow = pid_in(&b, "slow.pid");
    let out = b.cli(&["wait", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    dies(
        slow,
        Duration::from_secs(15),
        "the warm call past its walltime",
    );
    let report = analyze(&b, &run);
    assert_eq!(
        failed(&report, &run, "slow")["attempts"][0]["class"],
        "TIMEOUT",
        "{report}"
    );
    let hog = &failed(&report, &run, "hog")["attempts"][0];
    assert_eq!(hog["class"], "MEMORY_EXHAUSTION", "{report}");
    assert!(hog["peak_rss_bytes"].as_u64().unwrap() > 100 << 20, "{hog}");

    let held = submit(&b, &[warm_job(&b, "held", "")]);
    let pid = pid_in(&b, "held.pid");
    b.ok(&["cancel", &held]);
    dies(pid, Duration::from_secs(15), "a cancelled warm call");
}

#[test]
fn a_killed_zygote_or_one_that_cannot_start_leaves_the_task_to_run_cold() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    write_calls(
        &b,
        &[
            ("first", "whoami", "1,"),
            ("second", "whoami", "2,"),
            ("third", "whoami", "3,"),
        ],
    );
    let run = submit(&b, &[warm_job(&b, "first", "")]);
    b.ok(&["wait", &run]);
    let zygote = zygote_of(&value(&b, "first"));
    kill9(zygote);
    dies(zygote, Duration::from_secs(15), "the zygote");
    let run = submit(&b, &[warm_job(&b, "second", "")]);
    b.ok(&["wait", &run]);
    let second = value(&b, "second");
    assert_ne!(
        zygote_of(&second),
        zygote,
        "a new zygote serves the next task"
    );

    // A zygote that cannot start (its socket's directory is not private):
    // the task runs cold, as its own interpreter, and says why on stderr.
    let mut c = Broker::start();
    let tmp = c.dir.path().join("open-tmp");
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    std::fs::create_dir_all(tmp.join(format!("scalable-warm-{uid}"))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(tmp.join(format!("scalable-warm-{uid}")), open).unwrap();
    c.agent_env(&["--cpus", "1"], &[("TMPDIR", tmp.to_str().unwrap())]);
    c.wait_agents(1);
    write_calls(&c, &[("third", "whoami", "3,")]);
    let run = submit(&c, &[warm_job(&c, "third", "")]);
    c.ok(&["wait", &run]);
    let third = value(&c, "third");
    assert!(
        third["parent"].as_str().unwrap().contains("scalable-agent"),
        "{third}"
    );
    let logs = stdout(&c.cli(&["logs", &format!("{run}/third/0"), "--stderr"]));
    assert!(
        logs.contains("is not a private directory of this user; running the task cold"),
        "{logs}"
    );
}

#[test]
fn a_sigkilled_agent_takes_its_warm_call_and_its_zygote_along() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    write_calls(
        &b,
        &[
            ("probe", "whoami", "0,"),
            ("long", "sleeper", "'long.pid',"),
        ],
    );
    let run = submit(&b, &[warm_job(&b, "probe", "")]);
    b.ok(&["wait", &run]);
    let zygote = zygote_of(&value(&b, "probe"));
    submit(&b, &[warm_job(&b, "long", "")]);
    let pid = pid_in(&b, "long.pid");
    let agent = &mut b.agents[0];
    agent.kill().unwrap();
    agent.wait().unwrap();
    dies(
        pid,
        Duration::from_secs(15),
        "the warm call of a SIGKILLed agent",
    );
    dies(
        zygote,
        Duration::from_secs(15),
        "the zygote of a SIGKILLed agent",
    );
}
