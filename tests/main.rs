//! The one integration-test binary (STYLE habit 8). Every test starts a real
//! broker and real agents on loopback (port 0, a fresh state dir each) and
//! drives them through the real `scalable` CLI. Nothing is mocked.

mod support;

mod advisors;
mod agent_binary;
mod agent_loss;
mod assistants;
mod auth;
mod auto_sizing;
mod cache;
mod chaos;
mod checkpoints;
mod checkpoints_private;
mod clarity;
mod cli;
mod cli_compat;
mod credentials;
mod dag;
mod durability;
mod escaped_processes;
mod example;
mod failures;
mod handshake;
mod hostile;
mod input_limits;
mod item_deps;
mod item_staging;
mod local_agents;
mod message_caps;
mod newcomer;
mod packing;
mod pilots;
mod readme;
mod rebalance;
mod report;
mod scaling;
mod slurm;
mod slurm_scaling;
mod snapshot;
mod staging;
mod staging_batches;
mod staging_s3;
mod state_dir;
mod submit_errors;
mod telemetry;
mod transfer_why;
mod warm_python;
