//! Shared building blocks of Scalable: everything the broker, the agent and the CLI
//! must agree on.
//!
//! - [`protocol`]: the messages on the wire and their versions.
//! - [`run_history`]: what `stats`, `analyze` and `logs` answer (re-exported by `protocol`).
//! - [`pilot`]: a pilot's phase (`submitted` ... `ended`), as stored, shown and sent.
//! - [`frame`]: length-prefixed, size-capped postcard frames over QUIC streams.
//! - [`handshake`]: which peer versions a broker serves, and the line that refuses the rest.
//! - [`tls`]: the broker's self-signed certificate, fingerprint pinning, QUIC configs.
//! - [`access`]: the state dir, `access.json`, `agent.token`, token hashing.
//! - [`manifest`]: `scalable.yaml`: targets, components, tasks, overlays, `${VAR}`, validation.
//! - [`workflow`]: workflow YAML: parsing with spans, validation.
//! - [`input_file`]: reading a user's workflow or manifest file with a bound, regular files only.
//! - [`located`]: the one-line `FILE:LINE:COL: path: message (hint)` errors of both.
//! - `suggest`: did-you-mean for their hints.
//! - [`template`]: minijinja task templates (argv, outputs, env), compiled once per job.
//! - [`resources`]: partitionable resource bundles.
//! - [`units`]: sizes and durations as users write them.
//! - [`exit`]: exit codes of every binary.
//! - [`quote`]: POSIX shell quoting of argv.
//! - [`explain`]: why a task is where it is, and the demand per tag, as data.
//! - [`scaling`]: a stored scaling decision and its outcome, as the CLI sees it.
//! - [`private_files`]: files 0600 and directories 0700 under the state dir, whatever the umask.
//! - [`terminal`]: colour in log lines only on a terminal.

pub mod access;
pub mod exit;
pub mod explain;
pub mod failpoint;
pub mod frame;
#[cfg(test)]
mod fuzz;
pub mod handshake;
pub mod input_file;
pub mod located;
pub mod manifest;
pub mod object_store;
pub mod panic;
pub mod pilot;
pub mod private_files;
pub mod protocol;
pub mod protocol_v4;
pub mod protocol_v5;
pub mod protocol_v8;
pub mod quote;
pub mod resources;
pub mod run_history;
pub mod scaling;
pub mod stage;
pub mod staging;
pub(crate) mod suggest;
pub mod template;
pub mod terminal;
pub mod tls;
pub mod units;
pub mod workflow;
