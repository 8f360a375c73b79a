//! The Scalable pilot agent.
//!
//! - [`session`]: connect, hello, pull work, report results, leave.
//! - [`executor`]: run tasks as child processes, reap them, measure them.
//! - [`resources`]: what this host (or Slurm allocation, or cgroup) offers.

pub mod executor;
pub mod resources;
pub mod session;
