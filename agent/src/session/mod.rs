//! The agent's life: dial out to the broker, say hello, then pull work, run it
//! through the [`Executor`](crate::executor::Executor) as resources allow,
//! report results in batches until they are acknowledged, and leave on idle
//! timeout, lifetime, SIGTERM or the broker's word.
//!
//! Single-threaded (a current-thread runtime) on purpose: the cores belong to
//! the tasks. Processes are reaped on the executor's own thread.
//!
//! # Layout
//!
//! - this file: what the agent was told ([`AgentConfig`]) and how it ended ([`Exit`]);
//! - `reconnect`: [`run`], the agent's life across connections and the backoff;
//! - `connect`: dialling the broker and the hello handshake;
//! - `serve`: the event loop of one connection, one function per message kind;
//! - `silence`: deciding that a silent broker is lost (pure);
//! - `batch`: results and starts sent in bounded, coalesced `Events` messages;
//! - `drain`: leaving (SPEC §6): handing queued and running attempts back;
//! - `work`: what the agent holds (queue, running, unacknowledged results) and
//!   which queued task starts next.

mod batch;
mod chain;
mod connect;
mod drain;
mod reconnect;
mod serve;
mod silence;
mod stage_flow;
mod work;

#[cfg(test)]
mod test_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scalable_common::resources::Resources;

use crate::cpuset::CpuPool;
use crate::event_log::EventLog;
use crate::limits::LimitMode;
use crate::runtime::Runtime;

pub use drain::SIGTERM_EXIT_MAX;
pub use reconnect::{run, RECONNECT_BACKOFF_MAX_DEFAULT};

/// What the agent was told on its command line.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub broker: String,
    pub fingerprint: [u8; 32],
    pub token: String,
    pub name: String,
    pub hostname: String,
    pub resources: Resources,
    pub tags: Vec<String>,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub workdir: PathBuf,
    pub noop: bool,
    /// How long to keep trying to reach the broker before giving up.
    pub connect_timeout: Duration,
    /// The longest wait between reconnect tries (`--reconnect-max`); a restarted
    /// broker waits `heartbeat timeout + this` for agents to reclaim attempts.
    pub reconnect_max: Duration,
    pub orphan_guard: Option<std::sync::Arc<crate::orphan_guard::OrphanGuard>>,
    /// Kill a task above its memory request × this.
    pub memory_margin: f64,
    /// How memory limits are enforced (advertised as `limit_mode`).
    pub limits: LimitMode,
    /// Usable container runtimes, the one that runs tasks first.
    pub runtimes: Vec<Runtime>,
    /// GPU ids the agent hands out (`resources.gpus` of them).
    pub gpu_ids: Vec<String>,
    /// Cores to bind tasks to; `None`: tasks are not bound (see `cpuset`).
    pub cpu_binding: Option<CpuPool>,
    /// `--event-log`: one line per spawn, kill, result, ack, promotion (`event_log`).
    pub event_log: Option<Arc<EventLog>>,
    /// TEST HOOK (fault F13 of research/reliability.md), from
    /// `SCALABLE_TEST_DUPLICATE_RESULTS=1`: send every result twice, in two
    /// `Events` messages, so tests can check the broker counts it once. Never
    /// set it for real work: it doubles the result traffic.
    pub test_duplicate_results: bool,
    /// `--no-shared-fs`: tasks run in private directories, their declared
    /// inputs and outputs staged through the broker (`crate::staging`).
    pub no_shared_fs: bool,
    /// `--storage s3://bucket/prefix`: staged files move through that object
    /// store instead of the connection (`crate::staging::s3`).
    pub storage: Option<Arc<scalable_common::object_store::ObjectStore>>,
}

/// The env var of the duplicate-delivery test hook (`test_duplicate_results`).
pub const TEST_DUPLICATE_RESULTS_ENV: &str = "SCALABLE_TEST_DUPLICATE_RESULTS";

/// How the agent ended, for the exit code.
#[derive(Debug)]
pub enum Exit {
    /// Left normally (idle, lifetime, drained, broker said so).
    Done(String),
    /// The broker refused us (token, version): exit 3.
    Refused(String),
    /// Could not reach the broker in time: exit 3.
    Unreachable(String),
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
