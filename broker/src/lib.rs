//! The Scalable broker and the user CLI.
//!
//! Layout (see ARCHITECTURE.md for the whole map):
//! - [`core`]: the sans-IO state machine: runs, jobs, tasks, agents, scheduling,
//!   `why` as typed reasons, `demand` per tag. No clock, socket, file or RNG.
//! - [`server`]: the async shell: QUIC sessions, the core task, effect routing,
//!   the fleet's and the cache's I/O.
//! - [`store`]: SQLite, one writer thread, commit-then-send; schema and reads.
//! - [`paging`]: long replies cut into pages within a byte budget.
//! - [`submit`]: turns a submitted workflow into a plan for the core.
//! - [`restart`]: a restarted broker's core rebuilt from the store.
//! - [`state_lock`]: one broker per state dir (`broker.lock`, holding its pid and address).
//! - [`cache`]: `cache: true` keys, the blob store and its table.
//! - [`fleet`]: the broker's pilots (records, scale decisions, matching); I/O-free.
//! - [`providers`]: start/status/stop pilots through each platform's CLI.
//! - [`local`]: the minimal local provider (agent processes on this host).
//! - [`output_roots`]: where declared outputs may be (the task's directory, or a root of the broker's manifest).
//! - [`pilots`]: a manifest target's pilot groups: what `render` prints and `plan` shows and costs.
//! - [`scaler`]: the AdaptiveScaler's decision (sans-IO): demand, pilots, predictions in; pilots to add and remove, with reasoning, out.
//! - [`objective`]: `plan --objective --policy`: workers per tag for an objective, predicted makespan and cost, the alternatives.
//! - [`shapes`]: the agents this broker could still start, as shapes `submit` checks a run against.
//! - [`report`]: `scalable report`: a run's telemetry loaded from the store and rendered as text, JSON or HTML.
//! - [`render`]: what providers submit to start pilots (sbatch, cloud-init, Fargate, Kubernetes).
//! - [`assistant`]: the assistants of SPEC §12 (diagnose, explain, compose, migrate, init-component): heuristics, prompts, the LLM round.
//! - [`agent_binary`]: which `scalable-agent` a pilot runs and where it comes from.
//! - [`cli`], [`client`], [`cli_error`], [`output`]: the `scalable` CLI: one module
//!   per command, the connection, the error type, text and JSON rendering.

pub mod advisor;
pub mod agent_binary;
pub mod assistant;
pub mod cache;
pub mod checkpoints;
pub mod cli;
pub mod cli_error;
pub mod client;
pub mod core;
pub mod fleet;
pub mod local;
pub mod objective;
pub mod output;
pub mod output_roots;
pub mod paging;
pub mod pilots;
pub mod providers;
pub mod render;
pub mod report;
pub mod restart;
pub mod scaler;
pub mod server;
pub mod shapes;
pub mod staging;
pub mod state_lock;
pub mod store;
pub mod submit;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_fixtures;
