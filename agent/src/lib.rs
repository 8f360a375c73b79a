//! The Scalable pilot agent.
//!
//! - [`session`]: connect, hello, pull work, report results, leave.
//! - [`executor`]: run tasks as child processes, reap them, measure them.
//! - [`orphan_guard`]: a tiny helper process that kills tasks if the agent is SIGKILLed.
//! - [`resources`]: what this host (or Slurm allocation, or cgroup) offers.

pub mod executor;
pub mod orphan_guard;
pub mod resources;
pub mod session;
