//! The one integration-test binary (STYLE habit 8). Every test starts a real
//! broker and real agents on loopback (port 0, a fresh state dir each) and
//! drives them through the real `scalable` CLI. Nothing is mocked.

mod support;

mod agent_loss;
mod auth;
mod cache;
mod chaos;
mod cli;
mod credentials;
mod dag;
mod durability;
mod escaped_processes;
mod failures;
mod hostile;
mod input_limits;
mod local_agents;
mod message_caps;
mod packing;
mod pilots;
mod rebalance;
mod slurm;
mod state_dir;
mod submit_errors;
