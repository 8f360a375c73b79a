//! The manifest (`scalable.yaml`, SPEC §3): where and how work runs. This
//! module owns reading it: YAML with spans, `${VAR}` expansion, overlays,
//! validation and the resolved types the broker and the CLI consume. It does
//! no I/O: [`load_manifest`] takes the text and an environment lookup.
//!
//! The pipeline, each step in its own submodule:
//!
//! 1. `tree`: the text becomes a tree of nodes that remember their line and
//!    column, how they were spelled and whether they were quoted. Limits come
//!    first: the text size ([`MANIFEST_TEXT_BYTES_MAX`]), nodes, nesting and
//!    alias replay (a billion-laughs bomb stops after
//!    [`ALIAS_REPLAY_EVENTS_MAX`] replayed events). Duplicate keys are errors.
//! 2. `expand`: `${VAR}` and `${VAR:-default}` in values (never keys) are
//!    expanded; `$$` is a literal `$`. A value holding `${...}` takes the
//!    type of what it expands to (`max_workers: "${N:-4}"` is the number 4).
//!    The `workflow:` section is left alone, as a workflow file would be:
//!    `${...}` there belongs to the task's shell.
//! 3. `overlay`: the overlays named by the caller are deep-merged onto the
//!    manifest in the order given: maps merge key by key, lists and scalars
//!    replace, `null` removes a key. Overlays change what the manifest
//!    defines; they cannot add targets, components or tasks (a misspelt
//!    name would otherwise add a new one silently).
//! 4. `validate`: every key and value is checked against the schema and
//!    converted once into the public types (`schema`); `section` hands the
//!    `workflow:` section to [`crate::workflow`]. Every overlay, applied or
//!    not, is also checked on its own, and its errors point into it.
//!
//! Deliberately strict, because a wrong value costs a failed pilot later:
//! sizes and durations need a unit (`memory: 16` would be 16 bytes), a
//! quoted number is an error where an integer belongs (`max_workers: "4"`),
//! booleans are YAML 1.2's `true`/`false` only, and string options that end
//! up in job scripts must be one line.
//!
//! What one worker of a target offers: `local` gives `threads_per_worker`
//! cpus; `aws` gives `worker_cpu` CPU units (1024 = 1 vCPU) and `worker_mem`
//! MiB, as AWS counts them; `slurm`, `gcp` and `kubernetes` give
//! `worker_cpus`, `worker_memory` and `worker_gpus` when the manifest says.
//! Which targets the cross-checks use:
//!
//! - With a target (`--target T`), every component that T serves (all of
//!   them, or those named in T's `tags:`) must fit a worker of T, and must
//!   have no `image` if T has `containers: none`. Unset `${VAR}`s in other
//!   targets are not errors (they are not used), nor in overlays not applied.
//! - Without a target (`scalable validate FILE`), the manifest is checked as
//!   a whole: a component is an error only when no target that serves it
//!   could run it (each is too small, or has `containers: none` for an
//!   image). A worker of unknown size could fit anything. Checking each
//!   dimension on its own, a component that needs one target's cpus and
//!   another's memory passes here and fails with `--target`.
//!
//! Errors are collected (a YAML syntax error stops early), sorted by line and
//! printed as `FILE:LINE:COL: path.to.key: message (hint)`.

mod expand;
mod overlay;
mod schema;
mod section;
mod tree;
mod validate;

#[cfg(test)]
mod tests;

use crate::located::{Hint, LocatedError, LocatedErrors};

pub use schema::{
    Adaptive, AutoFallback, AutoResources, AwsClusterType, Component, ContainerPolicy, KubeKind,
    Manifest, Project, Provider, Target, TaskBinding, WorkerShape,
};
pub use validate::check_storage;

/// A manifest text larger than this is refused before it is parsed.
pub const MANIFEST_TEXT_BYTES_MAX: usize = 8 << 20;
/// At most this many YAML nodes (mappings, lists and scalars) in a manifest.
pub const MANIFEST_NODES_MAX: usize = 100_000;
/// At most this many parser events replayed by aliases (billion laughs).
pub const ALIAS_REPLAY_EVENTS_MAX: usize = 20_000;
/// At most this deep a nesting of mappings and lists.
pub const NESTING_DEPTH_MAX: usize = 64;
/// At most this many bytes produced by `${VAR}` expansion over the manifest.
pub const EXPANDED_BYTES_MAX: usize = 16 << 20;
/// Target, component, task and overlay names are identifiers; keep them short.
pub const NAME_CHARS_MAX: usize = 128;
/// At most this many workers per target.
pub const WORKERS_MAX: u32 = 100_000;
/// At most this many gpus per component or worker.
pub const GPUS_MAX: u32 = 1_024;
/// At most this many errors are reported; the rest are counted.
pub const ERRORS_MAX: usize = crate::located::ERRORS_MAX;

/// How to load a manifest: the target and overlays chosen on the command line
/// and where `${VAR}` values come from (the process environment in the
/// binaries, a map in tests).
pub struct LoadOptions<'a> {
    /// `--target T`; `None` checks the manifest as a whole.
    pub target: Option<&'a str>,
    /// `--overlay a --overlay b`, applied in this order.
    pub overlays: &'a [String],
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> LoadOptions<'a> {
    /// No target, no overlays, variables from `env`.
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        LoadOptions {
            target: None,
            overlays: &[],
            env,
        }
    }
}

/// Reads `${VAR}` from the process environment; what the binaries pass as
/// [`LoadOptions::env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One problem in a manifest: see [`LocatedError`]. A hint that suggests or
/// lists (`did you mean "x"?`, `valid: a, b`, `expected e.g. 16G`, `got -1`,
/// `targets are: a, b`) is printed as it is; advice is printed as
/// `(hint: export it, ...)`, as the CLI prints its own hints.
pub type ManifestError = LocatedError;
/// Every problem found in a manifest, one per line.
pub type ManifestErrors = LocatedErrors;

/// A manifest hint as printed: bare when it suggests or lists, labelled when
/// it advises.
fn hint_of(hint: String) -> Hint {
    if is_suggestion(&hint) {
        Hint::Plain(hint)
    } else {
        Hint::Advice(hint)
    }
}

/// True for hints that suggest a value or list the valid ones, rather than
/// advise what to do.
fn is_suggestion(hint: &str) -> bool {
    ["did you mean ", "valid", "expected ", "got "]
        .iter()
        .any(|p| hint.starts_with(p))
        || hint
            .split_once(" are: ")
            .is_some_and(|(what, _)| !what.contains(' '))
}

/// A line and column, 1-based; `line == 0` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Pos {
    line: usize,
    col: usize,
}

/// A problem with its place, before it is given the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issue {
    at: Pos,
    path: String,
    message: String,
    hint: Option<String>,
}

impl Issue {
    fn new(at: Pos, path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            at,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<Option<String>>) -> Issue {
        self.hint = hint.into();
        self
    }
}

/// A path under another: `overlays.x` and `targets.hpc` make
/// `overlays.x.targets.hpc`.
fn concat(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{path}"),
    }
}

/// `a.b` from `a` and `b`, or `b` at the top. A key that is not a plain
/// name is quoted (`mounts["./data"]`) so the path stays readable.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

/// Loads, expands, merges and checks a manifest. `file` only names the
/// source in errors. On success the manifest has passed every check for
/// `opts.target` (see the module doc for what is checked without one).
pub fn load_manifest(
    file: &str,
    text: &str,
    opts: &LoadOptions,
) -> Result<Manifest, ManifestErrors> {
    let one = |message: String, hint: Option<String>| {
        LocatedErrors(vec![LocatedError::whole_file(
            file,
            message,
            hint.map(hint_of),
        )])
    };
    if text.len() > MANIFEST_TEXT_BYTES_MAX {
        return Err(one(
            format!(
                "file is {} bytes; manifests are limited to {} MiB",
                text.len(),
                MANIFEST_TEXT_BYTES_MAX >> 20
            ),
            None,
        ));
    }
    let empty = || {
        one(
            "manifest is empty".to_string(),
            Some("start with version: 1, project: {name: NAME} and targets:".to_string()),
        )
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    let (root, mut issues) = match tree::parse(text) {
        Ok(parsed) => parsed,
        Err(issue) => return Err(finish(file, vec![issue])),
    };
    // Only comments: as empty as no text at all.
    if root.is_null() && root.text.is_empty() {
        return Err(empty());
    }
    let manifest = validate::load(root, opts, &mut issues);
    if issues.is_empty() {
        if let Some(m) = manifest {
            return Ok(m);
        }
        // `load` returns no manifest only with an issue; keep that promise
        // visible rather than returning a half-built manifest.
        issues.push(Issue::new(
            Pos::default(),
            "",
            "manifest could not be read (this is a bug in scalable, please report it)",
        ));
    }
    Err(finish(file, issues))
}

/// Places issues in the file, orders them as they appear, drops repeats (an
/// overlay's error is found both on its own and once merged) and caps their
/// number.
fn finish(file: &str, mut issues: Vec<Issue>) -> ManifestErrors {
    // Stable: errors without a line keep the order they were found in.
    issues.sort_by_key(|i| (i.at.line == 0, i.at.line, i.at.col));
    let mut seen = std::collections::HashSet::new();
    issues.retain(|i| seen.insert((i.at, i.path.clone(), i.message.clone())));
    let errors: Vec<ManifestError> = issues
        .into_iter()
        .map(|i| LocatedError {
            file: file.to_string(),
            line: i.at.line,
            col: i.at.col,
            path: i.path,
            what: i.message,
            hint: i.hint.map(hint_of),
        })
        .collect();
    LocatedErrors::capped(file, errors)
}
