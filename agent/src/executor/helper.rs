//! Processes the agent runs to their end and waits for itself (the S3
//! transport's `aws`, `scalable_common::object_store`). The reaper waits for
//! any child, so such a process is run under a spawn ticket held until it
//! has been waited for: the reaper leaves an exited pid it does not know to
//! a spawn still in flight, and this waiter reaps it with its status.
//!
//! Owns: that one rule. It must not start tasks. The cost, while a helper
//! runs: an unknown orphan that exits meanwhile is reaped only after it (task
//! leaders are reaped as usual), and escapee detection skips its rounds.

use std::io;
use std::process::{Command, Output};

use super::reaper::REAPER;

/// Runs `cmd` to its end and returns what it printed and its status.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    let ticket = REAPER.begin_spawn(None);
    let out = cmd.output();
    REAPER.end_spawn(ticket, None);
    out
}
