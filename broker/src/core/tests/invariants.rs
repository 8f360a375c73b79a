//! Invariants under a random walk, the sans-IO guard, and the stored text of event kinds.

use super::*;

#[test]
fn randomised_steps_keep_invariants() {
    // A small deterministic pseudo-random walk; the seed is printed so a failure replays.
    let seed: u64 = 0x5ca1ab1e;
    eprintln!("seed {seed:#x}");
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut env = TestEnv::new();
    let mut agents = vec![env.agent(2, &[]), env.agent(3, &["t"])];
    let mut t = job("t", 20);
    t.tag = Some("t".into());
    t.retries = 2;
    let mut u = job("u", 30);
    u.retries = 1;
    u.after = vec!["t".into()];
    env.submit(vec![t, u]);
    let mut outstanding: Vec<(AgentId, AttemptId)> = Vec::new();
    for _ in 0..2_000 {
        let fx = env.step();
        for (ag, list) in &fx.assign {
            outstanding.extend(list.iter().map(|x| (*ag, x.attempt)));
        }
        match rnd(6) {
            0..=2 if !outstanding.is_empty() => {
                let i = rnd(outstanding.len() as u64) as usize;
                let (ag, at) = outstanding.swap_remove(i);
                let code = if rnd(4) == 0 { 1 } else { 0 };
                env.core.agent_events(
                    ag,
                    &[],
                    vec![result(at, AttemptEnd::Exited { code })],
                    None,
                    env.now_ms,
                );
            }
            3 if agents.len() > 1 => {
                let i = rnd(agents.len() as u64) as usize;
                let ag = agents.swap_remove(i);
                env.core.agent_lost(ag, "chaos", env.now_ms);
                outstanding.retain(|(a, _)| *a != ag);
            }
            4 => {
                let tags: &[&str] = if rnd(2) == 0 { &[] } else { &["t"] };
                agents.push(env.agent(1 + rnd(3) as u32, tags));
            }
            _ => {
                env.advance(500);
            }
        }
    }
    env.core.sanity_check();
}

#[test]
fn the_core_does_no_io() {
    // STYLE habit 1: the core is sans-IO. A cheap guard against drift.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let forbidden = [
        "tokio::",
        "rusqlite::",
        "quinn::",
        "Instant::now",
        "SystemTime::now",
        "std::fs::",
        "std::net::",
        "std::process::",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The tests (a directory) may use what the core must not.
        if path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for f in forbidden {
            assert!(!text.contains(f), "{} mentions {f}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "the core's files were not found");
}

#[test]
fn event_kinds_keep_their_stored_text() {
    // `stats`, `analyze` and scripts read the `kind` column: the text is a contract.
    let kinds = [
        (EventKind::AgentReconnected, "agent_reconnected"),
        (EventKind::AgentReclaimed, "agent_reclaimed"),
        (EventKind::DuplicateResult, "duplicate_result"),
        (EventKind::StaleResult, "stale_result"),
        (EventKind::MemoryRaised, "memory_raised"),
        (EventKind::TasksCancelled, "tasks_cancelled"),
        (EventKind::BrokerStalled, "broker_stalled"),
        (EventKind::Reservation, "reservation"),
        (EventKind::RunResumed, "run_resumed"),
        (EventKind::PilotConnected, "pilot_connected"),
        (EventKind::UnmanagedAgent, "unmanaged_agent"),
    ];
    for (kind, text) in kinds {
        assert_eq!(kind.as_str(), text);
    }
}
