//! The first hour of a newcomer (issue 13): the mistakes a new user makes and
//! what they see, snapshot-tested as plain text. The README's own commands
//! are run by `readme.rs`; the runnable example by `example.rs`.

use crate::support::*;

/// A broker's and its local agents' logs redirected to files carry no
/// terminal colour codes (issue 13, item 11).
#[test]
fn logs_off_a_terminal_carry_no_colour_codes() {
    let b = Broker::start_with(&["--local-agents", "1"]);
    b.wait_agents(1);
    let run = b.ok(&["submit", "--", "true"]).trim().to_string();
    b.ok(&["wait", &run]);
    let broker_log = b.log();
    let agent_log =
        std::fs::read_to_string(b.state().join("local-agents/agent-1.log")).unwrap_or_default();
    for (name, log) in [("broker", &broker_log), ("agent", &agent_log)] {
        assert!(log.contains("INFO"), "{name} log has lines: {log}");
        assert!(
            !log.contains('\u{1b}'),
            "{name} log has colour codes: {log:?}"
        );
    }
}
