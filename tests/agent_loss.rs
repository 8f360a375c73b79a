//! A task dies with its agent, even when the agent is SIGKILLed.

use std::time::Duration;

use crate::support::*;

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose (it waits only for its reaper).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn tasks_die_with_a_sigkilled_agent() {
    let mut b = Broker::start();
    b.agent(&["--cpus", "1"]);
    b.wait_agents(1);
    b.ok(&[
        "submit",
        "--",
        "sh",
        "-c",
        "echo $$ > task.pid; exec sleep 60",
    ]);
    let pid_file = b.work().join("task.pid");
    wait_until(Duration::from_secs(10), "the task to start", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let agent = &mut b.agents[0];
    agent.kill().unwrap(); // SIGKILL: the agent cannot clean up itself
    agent.wait().unwrap();
    wait_until(
        Duration::from_secs(5),
        "the task to die with its agent",
        || !alive(pid),
    );
}
