//! The one integration-test binary (STYLE habit 8). Every test starts a real
//! broker and real agents on loopback (port 0, a fresh state dir each) and
//! drives them through the real `scalable` CLI. Nothing is mocked.

mod support;

mod agent_loss;
mod auth;
mod chaos;
mod cli;
mod dag;
mod durability;
mod failures;
mod hostile;
mod packing;
mod pilots;
mod slurm;
mod submit_errors;
