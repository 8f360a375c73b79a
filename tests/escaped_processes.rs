//! Regression (issue 12, defect 5): a daemon that leaves its task's process
//! group (`setsid sleep 1000 &`) ends with its task: when the task ends, when
//! it is cancelled, and when the agent is SIGKILLed (the orphan guard).

use std::time::Duration;

use crate::support::*;

#[test]
fn daemon_ends_with_its_task_and_with_a_cancel() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "2"]);
    b.wait_agents(1);
    b.ok(&[
        "submit",
        "--wait",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & echo $! > ended.pid; sleep 0.3",
    ]);
    dies(
        pid_in(&b, "ended.pid"),
        Duration::from_secs(5),
        "the daemon of an ended task to die",
    );
    let run = b
        .ok(&[
            "submit",
            "--",
            "sh",
            "-c",
            "setsid sleep 1000 & echo $! > cancelled.pid; sleep 100",
        ])
        .trim()
        .to_string();
    let pid = pid_in(&b, "cancelled.pid");
    assert!(alive(pid));
    b.ok(&["cancel", &run]);
    dies(
        pid,
        Duration::from_secs(10),
        "the daemon of a cancelled task to die",
    );
}

#[test]
fn daemon_dies_with_a_sigkilled_agent() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    b.ok(&[
        "submit",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & echo $! > daemon.pid; sleep 100",
    ]);
    let pid = pid_in(&b, "daemon.pid");
    // The orphan guard hears of an escaped group at the agent's next memory
    // sampling (each second); a SIGKILL before that is a documented gap.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(alive(pid));
    let agent = &mut b.agents[0];
    agent.kill().unwrap(); // SIGKILL: the agent cannot clean up itself
    agent.wait().unwrap();
    dies(
        pid,
        Duration::from_secs(5),
        "the daemon to die with its agent",
    );
}
