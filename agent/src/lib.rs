//! The Scalable pilot agent.
//!
//! - [`session`]: connect, hello, pull work, report results, leave.
//! - [`executor`]: run tasks as child processes, reap them, measure them.
//! - [`ending`]: how a task ended, as an `AttemptEnd` (pure).
//! - [`stage`]: attempt-scoped outputs: the stage dir, promotion and discard.
//! - [`event_log`]: `--event-log`, one line per spawn, kill, result, ack, promotion.
//! - [`limits`]: memory limits: cgroup v2 per task, or sampling the process tree.
//! - [`cpuset`]: the agent's cores and which task is bound to which.
//! - [`gpus`]: GPU detection (`CUDA_VISIBLE_DEVICES`, `nvidia-smi`) and the free-list.
//! - [`runtime`]: container runtimes: detection and the wrapping command lines.
//! - [`which`]: finding programs on a `PATH`.
//! - [`orphan_guard`]: a tiny helper process that kills tasks if the agent is SIGKILLed.
//! - [`credentials`]: the agent's token never reaches a task (env, /proc, the token file).
//! - [`resources`]: what this host (or Slurm allocation, or cgroup) offers.
//! - [`usage`]: one attempt's bounded usage series (cpu and RSS over time).
//! - [`warm`]: `warm-exec`, the trampoline of a warm Python task (a forked, pre-imported interpreter).

pub mod cpuset;
pub mod credentials;
pub mod ending;
pub mod event_log;
pub mod executor;
pub mod gpus;
pub mod limits;
pub mod orphan_guard;
pub mod resources;
pub mod runtime;
pub mod session;
pub mod stage;
pub mod staging;
pub mod usage;
pub mod warm;
pub mod which;

#[cfg(test)]
mod container_tests;
