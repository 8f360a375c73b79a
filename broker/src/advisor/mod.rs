//! The advisors of SPEC §11: what a task type should ask for, learned from
//! what its attempts really used.
//!
//! Layout (pure parts first): `sample` (what is learned from), `advice` (the
//! answer, seed 003's JSON), `quantile` (the ResourceAdvisor: percentiles with
//! headroom), `features` (samples → a numeric matrix, and how far a query is
//! from it), `model` (linear, random forest, gradient boosting over
//! smartcore), `learned` (the LearnedAdvisor: k-fold CV, conformal upper
//! bounds, confidence, fallback), `coverage` (an advisor whose recent
//! advised attempts fall short of its coverage steps back), `tune` (the
//! hyperparameter search), `auto` (one task's `memory: auto` request from
//! the advice, or its fallback); then the shell: `history` (samples read
//! from the store), `service` (training off the core, cached per task type;
//! tuned parameters on disk), `table` (the trained advisors dispatch asks:
//! refreshed in the background, never trained on the caller's account
//! beyond a first, bounded wait).
//!
//! Must not: run inside the core or on the store's writer thread; every
//! pure module takes data in and returns data out.

pub mod advice;
pub mod auto;
pub mod conformal;
pub mod coverage;
pub mod features;
pub mod history;
pub mod learned;
pub mod model;
pub mod quantile;
pub mod sample;
pub mod service;
pub mod synthetic;
pub mod table;
pub mod tune;

pub use advice::{Advice, AdvisedResources, CvScores, Evidence};
pub use quantile::{AdviceError, QuantileConfig};
pub use sample::{Feature, Features, Outcome, Sample};
