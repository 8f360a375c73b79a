//! Workflow definitions (SPEC §4): the YAML a user writes, checked and kept
//! unexpanded. `foreach`/`range` are expanded lazily: a job of a million tasks
//! is one `JobDef` here and one template set in the broker, never a million argv.
//!
//! This module owns parsing (serde-saphyr with spans), validation (names,
//! `after` references, cycles, templates) and rendering a task's argv. It does no
//! I/O beyond what its caller hands it (`parse_workflow` takes the text).
//!
//! The pipeline, each step in its own submodule:
//!
//! 1. `raw`: the YAML into raw serde shapes with spans; a syntax or type
//!    error stops here, worded for a workflow author; `strict` reads its
//!    numbers and booleans (a quoted number is a string, as in manifests).
//! 2. `convert`: raw shapes to the public types of `def` (`WorkflowDef`,
//!    `JobDef`, `Items`), recording each value's place in `spans`.
//! 3. `check`: the semantic checks, also run on a `WorkflowDef` that came
//!    over the network ([`validate`]); `cycles` finds loops in `after`.
//! 4. `spans::finish`: issues get their line, are sorted and capped, and
//!    come back as [`crate::located::LocatedErrors`].

mod check;
mod convert;
mod cycles;
mod def;
mod per_item;
mod range;
mod raw;
mod spans;
mod strict;

#[cfg(test)]
mod tests;

pub use crate::located::ERRORS_MAX;
pub use crate::template::JobTemplates;
pub use def::{quick_job, Item, Items, JobDef, Per, PerAfter, ResourceRequest, WorkflowDef};
pub use per_item::{match_items, ItemMap, Mismatch};
pub use range::parse_range;

use crate::located::{Hint, LocatedError, LocatedErrors};
use spans::{finish, Spans};

/// One problem in a workflow: see [`LocatedError`].
pub type WorkflowError = LocatedError;
/// Every problem found in a workflow: see [`LocatedErrors`].
pub type WorkflowErrors = LocatedErrors;

/// At most this many tasks in one run, over all its jobs.
pub const TASKS_PER_RUN_MAX: u64 = 10_000_000;
/// At most this many retries per task.
pub const RETRIES_MAX: u32 = 100;
/// Paths one job's `checkpoint:` may name.
pub const CHECKPOINT_PATHS_MAX: usize = 16;
/// At most this many cpus per task.
pub const CPUS_MAX: u32 = 100_000;
/// Job names are identifiers in CLI output and paths; keep them short.
pub const JOB_NAME_CHARS_MAX: usize = 128;

/// The longest workflow name and tag, in characters (like a job name's).
pub const NAME_CHARS_MAX: usize = JOB_NAME_CHARS_MAX;
/// A workflow text larger than this is refused before parsing.
pub const WORKFLOW_TEXT_BYTES_MAX: usize = 64 << 20;

/// Parses and checks a workflow (SPEC §4). `file` only names the source in
/// errors. YAML syntax and type errors stop at the first; every semantic
/// error is reported.
pub fn parse_workflow(file: &str, text: &str) -> Result<WorkflowDef, WorkflowErrors> {
    if text.len() > WORKFLOW_TEXT_BYTES_MAX {
        return Err(LocatedErrors(vec![LocatedError::whole_file(
            file,
            format!(
                "workflow is {} bytes, more than the limit of {WORKFLOW_TEXT_BYTES_MAX}",
                text.len()
            ),
            Some(Hint::Plain(
                "use range: instead of long foreach lists".to_string(),
            )),
        )]));
    }
    if text.trim().is_empty() {
        return Err(LocatedErrors(vec![LocatedError::whole_file(
            file,
            "workflow file is empty",
            Some(Hint::Plain(
                "start with `workflow: NAME` and a list of `jobs`".to_string(),
            )),
        )]));
    }
    let raw = raw::read(file, text)?;
    let mut spans = Spans::default();
    let mut issues = Vec::new();
    let (def, bad_items) = convert::convert(raw, &mut spans, &mut issues);
    issues.extend(check::check(&def, &spans, &bad_items));
    finish(file, issues, &spans)?;
    Ok(def)
}

/// Semantic checks of a workflow (SPEC §4): names, `after` references,
/// cycles, limits and templates. For a `WorkflowDef` that did not come from
/// [`parse_workflow`] (which calls this with locations); errors then carry
/// the key path but no line.
pub fn validate(def: &WorkflowDef, file: &str) -> Result<(), WorkflowErrors> {
    let spans = Spans::default();
    let issues = check::check(def, &spans, &vec![false; def.jobs.len()]);
    finish(file, issues, &spans)
}
