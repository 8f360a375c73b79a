//! The Scalable broker and the user CLI.
//!
//! Layout (see ARCHITECTURE.md for the whole map):
//! - [`core`]: the sans-IO state machine: runs, jobs, tasks, agents, scheduling.
//! - [`store`]: SQLite, one writer thread, commit-then-send.
//! - [`paging`]: long replies cut into pages within a byte budget.
//! - [`server`]: the async shell: QUIC, clock, store and core wired together.
//! - [`submit`]: turns a submitted workflow into a plan for the core.
//! - [`restart`]: a restarted broker's core rebuilt from the store.
//! - [`local`]: the minimal local provider (agent processes on this host).
//! - [`pilots`]: a manifest target's pilot groups: what `render` prints and `plan` shows.
//! - [`render`]: what providers submit to start pilots (sbatch, cloud-init, Fargate, Kubernetes).
//! - [`client`], [`cli`], [`cli_error`], [`output`]: the `scalable` CLI.

pub mod cache;
pub mod cli;
pub mod cli_error;
pub mod client;
pub mod core;
pub mod fleet;
pub mod local;
pub mod output;
pub mod paging;
pub mod pilots;
pub mod providers;
pub mod render;
pub mod restart;
pub mod server;
pub mod store;
pub mod submit;
