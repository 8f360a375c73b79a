//! Workflow definitions (SPEC §4): the YAML a user writes, checked and kept
//! unexpanded. `foreach`/`range` are expanded lazily: a job of a million tasks
//! is one `JobDef` here and one template set in the broker, never a million argv.
//!
//! This module owns parsing (serde-saphyr with spans), validation (names,
//! `after` references, cycles, templates) and rendering a task's argv. It does no
//! I/O beyond what its caller hands it (`parse_workflow` takes the text).

use serde::{Deserialize, Serialize};

/// A whole workflow: what `submit` sends to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    pub name: String,
    /// Stop scheduling new tasks after this many failed tasks.
    pub max_fails: Option<u64>,
    pub jobs: Vec<JobDef>,
}

/// One node of the DAG; `items` expands it into tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    pub name: String,
    /// argv; each element is a minijinja template over `item`, `index`, `run_id`.
    pub command: Vec<String>,
    pub items: Items,
    /// Jobs all of whose tasks must succeed before this one's start.
    pub after: Vec<String>,
    /// The tag agents must serve (`tag:`); `None` runs on generic agents.
    pub tag: Option<String>,
    /// A manifest task binding (`task:`), resolved by the broker's manifest.
    pub task: Option<String>,
    pub resources: ResourceRequest,
    pub retries: u32,
    pub walltime_ms: Option<u64>,
    /// Higher runs first among ready tasks (HTCondor/DAGMan PRIORITY).
    pub priority: i32,
    /// Templated like argv.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Templated values stored with each task for the advisors.
    pub features: Vec<(String, String)>,
    pub max_running: Option<u32>,
    pub max_fails: Option<u64>,
    pub cache: bool,
}

/// What a job expands over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Items {
    /// No `foreach`/`range`: one task, `item` is undefined... rendered as index 0.
    One,
    /// `foreach: [...]`.
    List(Vec<Item>),
    /// `range: "A..=B"` or `"A..B"`, stored inclusive.
    Range { start: i64, end: i64 },
}

impl Items {
    pub fn count(&self) -> u64 {
        match self {
            Items::One => 1,
            Items::List(v) => v.len() as u64,
            Items::Range { start, end } => (end - start + 1).max(0) as u64,
        }
    }

    /// The item of task `index` (0-based), `None` for `Items::One`.
    pub fn get(&self, index: u64) -> Option<Item> {
        match self {
            Items::One => None,
            Items::List(v) => v.get(index as usize).cloned(),
            Items::Range { start, .. } => Some(Item::Int(start + index as i64)),
        }
    }
}

/// One `foreach` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Str(s) => f.write_str(s),
            Item::Int(i) => write!(f, "{i}"),
            Item::Float(x) => write!(f, "{x}"),
            Item::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What a job asks for; unset fields come from the manifest binding or defaults
/// (1 cpu, no memory reservation, no gpus).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub gpus: Option<u32>,
    pub custom: Vec<(String, u64)>,
}

// ---------------------------------------------------------------------------
// Everything below works on the types above; they stay as they are because the
// broker, the agent and the wire protocol use them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use crate::template::check_job_templates;
pub use crate::template::JobTemplates;
use crate::units::{parse_duration_ms, parse_size_bytes};

/// At most this many tasks in one run, over all its jobs.
pub const TASKS_PER_RUN_MAX: u64 = 10_000_000;
/// At most this many retries per task.
pub const RETRIES_MAX: u32 = 100;
/// At most this many cpus per task.
pub const CPUS_MAX: u32 = 100_000;
/// Job names are identifiers in CLI output and paths; keep them short.
pub const JOB_NAME_CHARS_MAX: usize = 128;
/// A workflow text larger than this is refused before parsing.
pub const WORKFLOW_TEXT_BYTES_MAX: usize = 64 << 20;
/// At most this many errors are reported; the rest are counted.
pub const ERRORS_MAX: usize = 100;

impl Items {
    /// Like [`Items::count`] but never overflows, whatever the bounds (a
    /// `JobDef` from the network may not have been validated).
    pub fn count_saturating(&self) -> u64 {
        match self {
            Items::One => 1,
            Items::List(v) => v.len() as u64,
            Items::Range { start, end } => {
                let n = i128::from(*end) - i128::from(*start) + 1;
                u64::try_from(n.max(0)).unwrap_or(u64::MAX)
            }
        }
    }
}

impl WorkflowDef {
    /// Tasks over all jobs (what `submit --json` prints as `tasks`).
    pub fn task_count(&self) -> u64 {
        self.jobs
            .iter()
            .fold(0u64, |n, j| n.saturating_add(j.items.count_saturating()))
    }
}

/// One problem in a workflow, printed as `FILE:LINE:COL: path: message (hint)`,
/// or `FILE: path: message (hint)` when the line is unknown (a `WorkflowDef`
/// checked after it came over the network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// Key path such as `jobs[1].after[0]`; empty for the whole document.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Writes `FILE:LINE:COL: path: message` (`FILE: message` parts left out when
/// unknown): the shared front of workflow and manifest errors.
pub(crate) fn write_located(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    line: usize,
    col: usize,
    path: &str,
    message: &str,
) -> fmt::Result {
    f.write_str(file)?;
    if line > 0 {
        write!(f, ":{line}:{col}")?;
    }
    f.write_str(": ")?;
    if !path.is_empty() {
        write!(f, "{path}: ")?;
    }
    f.write_str(message)
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(
            f,
            &self.file,
            self.line,
            self.col,
            &self.path,
            &self.message,
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowError {}

/// Every problem found in a workflow, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowErrors(pub Vec<WorkflowError>);

impl fmt::Display for WorkflowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowErrors {}

/// A problem before it is given a place in the file.
struct Issue {
    path: String,
    message: String,
    hint: Option<String>,
}

impl Issue {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: Option<String>) -> Issue {
        self.hint = hint;
        self
    }
}

/// Where each key path's value starts in the file; empty when checking a
/// `WorkflowDef` that has no file behind it.
#[derive(Default)]
struct Spans(HashMap<String, (usize, usize)>);

impl Spans {
    fn add<T>(&mut self, path: &str, value: &Spanned<T>) {
        self.add_location(path, &value.referenced);
    }

    fn add_location(&mut self, path: &str, loc: &Location) {
        if loc.line() > 0 {
            self.0.insert(
                path.to_string(),
                (loc.line() as usize, loc.column() as usize),
            );
        }
    }

    /// The location of `path`, or of its nearest ancestor that has one, so an
    /// error about `jobs[2].command` points at least at job 2.
    fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(loc) = self.0.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Places issues in the file, orders them as they appear and caps their number.
fn finish(file: &str, issues: Vec<Issue>, spans: &Spans) -> Result<(), WorkflowErrors> {
    if issues.is_empty() {
        return Ok(());
    }
    let mut errors: Vec<WorkflowError> = issues
        .into_iter()
        .map(|i| {
            let (line, col) = spans.find(&i.path).unwrap_or((0, 0));
            WorkflowError {
                file: file.to_string(),
                line,
                col,
                path: i.path,
                message: i.message,
                hint: i.hint,
            }
        })
        .collect();
    // Stable: errors without a line keep the order they were found in.
    errors.sort_by_key(|e| (e.line == 0, e.line, e.col));
    if errors.len() > ERRORS_MAX {
        let more = errors.len() - ERRORS_MAX;
        errors.truncate(ERRORS_MAX);
        errors.push(WorkflowError {
            file: file.to_string(),
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("{more} more errors not shown"),
            hint: None,
        });
    }
    Err(WorkflowErrors(errors))
}

// --- Raw YAML shapes --------------------------------------------------------
//
// The public types do not map 1:1 to YAML (`env` is ordered pairs, `foreach`
// and `range` are one `Items`, sizes are strings), so YAML lands here first,
// with spans where an error may need to point, and is converted after.

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    workflow: Spanned<String>,
    #[serde(default)]
    max_fails: Option<u64>,
    jobs: Spanned<Vec<Spanned<RawJob>>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    #[serde(default)]
    task: Option<String>,
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    foreach: Option<Spanned<Vec<Spanned<RawItem>>>>,
    #[serde(default)]
    range: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    resources: Option<Spanned<RawResources>>,
    #[serde(default)]
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    walltime: Option<Spanned<String>>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    env: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    features: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    max_running: Option<Spanned<u32>>,
    #[serde(default)]
    max_fails: Option<u64>,
    #[serde(default)]
    cache: Option<bool>,
    #[serde(default)]
    after: Option<Spanned<After>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    cpus: Option<Spanned<u32>>,
    /// A size (`8G`) or a number of bytes; numbers arrive as their text.
    #[serde(default)]
    memory: Option<Spanned<String>>,
    #[serde(default)]
    gpus: Option<u32>,
    #[serde(default)]
    custom: Option<Pairs<u64>>,
}

/// A `foreach` value: any scalar but null, keeping its YAML type.
struct RawItem(Item);

impl<'de> serde::Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawItem, E> {
                Ok(RawItem(Item::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawItem, E> {
                Ok(RawItem(Item::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawItem, E> {
                i64::try_from(v)
                    .map(|v| RawItem(Item::Int(v)))
                    .map_err(|_| {
                        E::custom(format!("integer {v} is too large (at most {})", i64::MAX))
                    })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawItem, E> {
                Ok(RawItem(Item::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawItem, E> {
                Ok(RawItem(Item::Str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawItem, E> {
                Ok(RawItem(Item::Str(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A YAML mapping kept in the order written (`env`, `features`, `custom`).
struct Pairs<V>(Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// `after: a` or `after: [a, b]`.
enum After {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> serde::Deserialize<'de> for After {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = After;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a job name or a list of job names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<After, E> {
                Ok(After::One(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<After, E> {
                Ok(After::One(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<After, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<Spanned<String>>()? {
                    out.push(name);
                }
                Ok(After::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The key path of a serde error as users write it: `jobs[1].after[0]`.
/// `Spanned` shows up as an extra `value` key and duplicate keys as `?`; both
/// are dropped, except `value` as a user's own key in `env`, `features` or
/// `custom` (those maps are never `Spanned` themselves, so a `value` right
/// after them is the user's).
fn clean_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut prev_key: Option<&str> = None;
    for seg in path.iter() {
        let key = match seg {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                prev_key = None;
                continue;
            }
            Segment::Map { key } => key.as_str(),
            Segment::Enum { variant } => variant.as_str(),
            Segment::Unknown => continue,
        };
        if key == "value" && !matches!(prev_key, Some("env" | "features" | "custom")) {
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
        prev_key = Some(key);
    }
    out
}

/// Lowercase first letter and no trailing period, as all our messages are.
pub(crate) fn tidy(message: &str) -> String {
    let m = message.trim().trim_end_matches('.');
    let mut chars = m.chars();
    match (chars.next(), chars.next()) {
        // Keep acronyms such as "YAML" as they are.
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            let mut s: String = a.to_lowercase().collect();
            s.push_str(&m[a.len_utf8()..]);
            s
        }
        _ => m.to_string(),
    }
}

/// serde-saphyr's terse type errors in words a workflow author knows.
fn plain_type_message(message: &str) -> String {
    match message {
        "invalid u32" => format!("expected a whole number from 0 to {}", u32::MAX),
        "invalid u64" => format!("expected a whole number from 0 to {}", u64::MAX),
        "invalid i32" => format!("expected a whole number from {} to {}", i32::MIN, i32::MAX),
        "invalid boolean" => "expected true or false".to_string(),
        "expected string scalar" => "expected a string".to_string(),
        "expected sequence start" => "expected a list".to_string(),
        "expected mapping start" => "expected a mapping".to_string(),
        other => other.to_string(),
    }
}

/// A YAML syntax or type error as a `WorkflowError`.
fn yaml_error(file: &str, path: String, err: &serde_saphyr::Error) -> WorkflowError {
    use serde_saphyr::Error as E;
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (line, col) = err
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let (path, message, hint) = match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = match did_you_mean(field, expected.iter().copied()) {
                Some(h) => h,
                None if expected.is_empty() => "this mapping takes no keys".to_string(),
                None => format!("valid keys: {}", expected.join(", ")),
            };
            // serde_path_to_error already ends the path with the unknown key.
            (path, format!("unknown key {field:?}"), Some(hint))
        }
        E::SerdeMissingField { field, .. } => (path, format!("missing key {field:?}"), None),
        E::DuplicateMappingKey { key, .. } => {
            let message = match key {
                Some(k) => format!("duplicate key {k:?}"),
                None => "duplicate key".to_string(),
            };
            (path, message, Some("each key may appear once".to_string()))
        }
        _ => {
            let message = serde_saphyr::UserMessageFormatter.format_message(inner);
            (path, plain_type_message(&tidy(&message)), None)
        }
    };
    WorkflowError {
        file: file.to_string(),
        line,
        col,
        path,
        message,
        hint,
    }
}

/// Parses and checks a workflow (SPEC §4). `file` only names the source in
/// errors. YAML syntax and type errors stop at the first; every semantic
/// error is reported.
pub fn parse_workflow(file: &str, text: &str) -> Result<WorkflowDef, WorkflowErrors> {
    if text.len() > WORKFLOW_TEXT_BYTES_MAX {
        return Err(WorkflowErrors(vec![WorkflowError {
            file: file.to_string(),
            line: 0,
            col: 0,
            path: String::new(),
            message: format!(
                "workflow is {} bytes, more than the limit of {WORKFLOW_TEXT_BYTES_MAX}",
                text.len()
            ),
            hint: Some("use range: instead of long foreach lists".to_string()),
        }]));
    }
    if text.trim().is_empty() {
        return Err(WorkflowErrors(vec![WorkflowError {
            file: file.to_string(),
            line: 0,
            col: 0,
            path: String::new(),
            message: "workflow file is empty".to_string(),
            hint: Some("start with `workflow: NAME` and a list of `jobs`".to_string()),
        }]));
    }
    let options = serde_saphyr::options! { with_snippet: false };
    let mut error_path = String::new();
    let raw: Result<RawWorkflow, _> =
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                error_path = clean_path(e.path());
                e.into_inner()
            })
        });
    let raw = raw.map_err(|e| WorkflowErrors(vec![yaml_error(file, error_path, &e)]))?;

    let mut spans = Spans::default();
    let mut issues = Vec::new();
    let (def, bad_items) = convert(raw, &mut spans, &mut issues);
    issues.extend(check(&def, &spans, &bad_items));
    finish(file, issues, &spans)?;
    Ok(def)
}

/// Semantic checks of a workflow (SPEC §4): names, `after` references,
/// cycles, limits and templates. For a `WorkflowDef` that did not come from
/// [`parse_workflow`] (which calls this with locations); errors then carry
/// the key path but no line.
pub fn validate(def: &WorkflowDef, file: &str) -> Result<(), WorkflowErrors> {
    let spans = Spans::default();
    let issues = check(def, &spans, &vec![false; def.jobs.len()]);
    finish(file, issues, &spans)
}

/// Raw YAML to the public types; problems that need the raw form (two of
/// `foreach`/`range`, bad sizes, durations and ranges) go to `issues`.
/// Returns, per job, whether its items are broken (so templates are not
/// rendered against a placeholder).
fn convert(
    raw: RawWorkflow,
    spans: &mut Spans,
    issues: &mut Vec<Issue>,
) -> (WorkflowDef, Vec<bool>) {
    spans.add("workflow", &raw.workflow);
    spans.add("jobs", &raw.jobs);
    let mut jobs = Vec::with_capacity(raw.jobs.value.len());
    let mut bad_items = Vec::with_capacity(raw.jobs.value.len());
    for (i, job) in raw.jobs.value.into_iter().enumerate() {
        let p = format!("jobs[{i}]");
        spans.add(&p, &job);
        let (job, bad) = convert_job(&p, job.value, spans, issues);
        jobs.push(job);
        bad_items.push(bad);
    }
    let def = WorkflowDef {
        name: raw.workflow.value,
        max_fails: raw.max_fails,
        jobs,
    };
    (def, bad_items)
}

fn convert_job(p: &str, raw: RawJob, spans: &mut Spans, issues: &mut Vec<Issue>) -> (JobDef, bool) {
    spans.add(&format!("{p}.name"), &raw.name);
    spans.add(&format!("{p}.command"), &raw.command);
    let command = spanned_list(&format!("{p}.command"), raw.command.value, spans);
    let inputs = spanned_list(&format!("{p}.inputs"), raw.inputs, spans);
    let outputs = spanned_list(&format!("{p}.outputs"), raw.outputs, spans);

    let mut bad_items = false;
    let items = match (raw.foreach, raw.range) {
        (Some(_), Some(range)) => {
            spans.add(&format!("{p}.range"), &range);
            issues.push(
                Issue::new(format!("{p}.range"), "foreach and range are exclusive")
                    .hint(Some("keep one of them".to_string())),
            );
            bad_items = true;
            Items::One
        }
        (Some(list), None) => {
            let fp = format!("{p}.foreach");
            spans.add(&fp, &list);
            let mut items = Vec::with_capacity(list.value.len());
            for (k, item) in list.value.into_iter().enumerate() {
                spans.add(&format!("{fp}[{k}]"), &item);
                items.push(item.value.0);
            }
            Items::List(items)
        }
        (None, Some(range)) => {
            let rp = format!("{p}.range");
            spans.add(&rp, &range);
            match parse_range(&range.value) {
                Ok((start, end)) => Items::Range { start, end },
                Err(e) => {
                    issues.push(Issue::new(rp, e));
                    bad_items = true;
                    Items::One
                }
            }
        }
        (None, None) => Items::One,
    };

    let mut resources = ResourceRequest::default();
    if let Some(r) = raw.resources {
        let rp = format!("{p}.resources");
        spans.add(&rp, &r);
        let r = r.value;
        if let Some(cpus) = r.cpus {
            spans.add(&format!("{rp}.cpus"), &cpus);
            resources.cpus = Some(cpus.value);
        }
        if let Some(memory) = r.memory {
            let mp = format!("{rp}.memory");
            spans.add(&mp, &memory);
            match parse_size_bytes(&memory.value) {
                Ok(bytes) => resources.memory_bytes = Some(bytes),
                Err(e) => issues.push(Issue::new(mp, e.0)),
            }
        }
        resources.gpus = r.gpus;
        resources.custom = r.custom.map(|c| c.0).unwrap_or_default();
    }

    let walltime_ms = raw.walltime.and_then(|w| {
        let wp = format!("{p}.walltime");
        spans.add(&wp, &w);
        match parse_duration_ms(&w.value) {
            Ok(ms) => Some(ms),
            Err(e) => {
                issues.push(Issue::new(wp, e.0));
                None
            }
        }
    });

    let retries = raw.retries.map(|r| {
        spans.add(&format!("{p}.retries"), &r);
        r.value
    });
    let max_running = raw.max_running.map(|m| {
        spans.add(&format!("{p}.max_running"), &m);
        m.value
    });
    let workdir = raw.workdir.map(|w| {
        spans.add(&format!("{p}.workdir"), &w);
        w.value
    });
    let env = spanned_pairs(&format!("{p}.env"), raw.env, spans);
    let features = spanned_pairs(&format!("{p}.features"), raw.features, spans);

    let after = match raw.after {
        None => Vec::new(),
        Some(after) => {
            let ap = format!("{p}.after");
            spans.add(&ap, &after);
            match after.value {
                After::One(name) => {
                    // A single name has no element span of its own.
                    spans.add_location(&format!("{ap}[0]"), &after.referenced);
                    vec![name]
                }
                After::Many(names) => spanned_list(&ap, names, spans),
            }
        }
    };

    let job = JobDef {
        name: raw.name.value,
        command,
        items,
        after,
        tag: raw.tag,
        task: raw.task,
        resources,
        retries: retries.unwrap_or(0),
        walltime_ms,
        priority: raw.priority.unwrap_or(0),
        inputs,
        outputs,
        env,
        workdir,
        features,
        max_running,
        max_fails: raw.max_fails,
        cache: raw.cache.unwrap_or(false),
    };
    (job, bad_items)
}

fn spanned_list(path: &str, list: Vec<Spanned<String>>, spans: &mut Spans) -> Vec<String> {
    list.into_iter()
        .enumerate()
        .map(|(k, s)| {
            spans.add(&format!("{path}[{k}]"), &s);
            s.value
        })
        .collect()
}

fn spanned_pairs(
    path: &str,
    pairs: Option<Pairs<Spanned<String>>>,
    spans: &mut Spans,
) -> Vec<(String, String)> {
    let Some(pairs) = pairs else {
        return Vec::new();
    };
    pairs
        .0
        .into_iter()
        .map(|(k, v)| {
            spans.add(&format!("{path}.{k}"), &v);
            (k, v.value)
        })
        .collect()
}

fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn items_path(job: &JobDef, p: &str) -> String {
    match job.items {
        Items::Range { .. } => format!("{p}.range"),
        _ => format!("{p}.foreach"),
    }
}

/// All semantic checks; `bad_items[i]` skips rendering job i's templates.
fn check(def: &WorkflowDef, spans: &Spans, bad_items: &[bool]) -> Vec<Issue> {
    let mut issues = Vec::new();
    if def.name.trim().is_empty() {
        issues.push(Issue::new("workflow", "workflow name is empty"));
    }
    if def.jobs.is_empty() {
        issues.push(Issue::new("jobs", "workflow has no jobs").hint(Some(
            "add at least one job with a name and a command".to_string(),
        )));
    }

    // First job of each name; `after` resolves to it.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, job) in def.jobs.iter().enumerate() {
        let p = format!("jobs[{i}]");
        let np = format!("{p}.name");
        if job.name.is_empty() {
            issues.push(Issue::new(np, "job name is empty"));
        } else if job.name.chars().count() > JOB_NAME_CHARS_MAX {
            issues.push(Issue::new(
                np,
                format!("job name is longer than {JOB_NAME_CHARS_MAX} characters"),
            ));
        } else if !valid_job_name(&job.name) {
            issues.push(
                Issue::new(np, format!("invalid job name {:?}", job.name)).hint(Some(
                    "use letters, digits, \"_\", \".\" and \"-\"".to_string(),
                )),
            );
        } else if let Some(&first) = by_name.get(job.name.as_str()) {
            let first_path = format!("jobs[{first}].name");
            let at = match spans.find(&first_path) {
                Some((line, _)) => format!("line {line}"),
                None => format!("jobs[{first}]"),
            };
            issues.push(
                Issue::new(np, format!("duplicate job name {:?}", job.name))
                    .hint(Some(format!("first defined at {at}"))),
            );
        }
        by_name.entry(job.name.as_str()).or_insert(i);

        if job.command.is_empty() {
            issues.push(
                Issue::new(format!("{p}.command"), "command is empty").hint(Some(
                    "give the argv as a list, e.g. [python, run.py]".to_string(),
                )),
            );
        }
        match &job.items {
            Items::List(v) if v.is_empty() => {
                issues.push(Issue::new(format!("{p}.foreach"), "foreach is empty"));
            }
            Items::Range { start, end } if start > end => {
                issues.push(Issue::new(
                    format!("{p}.range"),
                    format!("range is empty: start {start} is after end {end}"),
                ));
            }
            _ => {}
        }
        let count = job.items.count_saturating();
        if count > TASKS_PER_RUN_MAX {
            issues.push(Issue::new(
                items_path(job, &p),
                format!(
                    "job {:?} has {count} tasks, more than the limit of {TASKS_PER_RUN_MAX} per run",
                    job.name
                ),
            ));
        }
        if job.retries > RETRIES_MAX {
            issues.push(Issue::new(
                format!("{p}.retries"),
                format!(
                    "retries {} is more than the limit of {RETRIES_MAX}",
                    job.retries
                ),
            ));
        }
        match job.resources.cpus {
            Some(0) => issues.push(Issue::new(
                format!("{p}.resources.cpus"),
                "cpus must be at least 1",
            )),
            Some(n) if n > CPUS_MAX => issues.push(Issue::new(
                format!("{p}.resources.cpus"),
                format!("cpus {n} is more than the limit of {CPUS_MAX}"),
            )),
            _ => {}
        }
        if job.max_running == Some(0) {
            issues.push(
                Issue::new(format!("{p}.max_running"), "max_running must be at least 1")
                    .hint(Some("leave it out for no limit".to_string())),
            );
        }
        for (k, _) in &job.env {
            if k.is_empty() || k.contains(['=', '\0']) {
                issues.push(Issue::new(
                    format!("{p}.env.{k}"),
                    format!("invalid environment variable name {k:?}"),
                ));
            }
        }

        let render = !bad_items.get(i).copied().unwrap_or(false) && count <= TASKS_PER_RUN_MAX;
        for t in check_job_templates(job, render) {
            issues.push(Issue::new(format!("{p}.{}", t.field), t.message));
        }
    }

    let total = def.task_count();
    if total > TASKS_PER_RUN_MAX
        && def
            .jobs
            .iter()
            .all(|j| j.items.count_saturating() <= TASKS_PER_RUN_MAX)
    {
        issues.push(
            Issue::new(
                "jobs",
                format!("workflow has {total} tasks, more than the limit of {TASKS_PER_RUN_MAX} per run"),
            )
            .hint(Some("split it into several runs".to_string())),
        );
    }

    // `after`: references, then cycles over the edges that resolved.
    let names: Vec<&str> = def.jobs.iter().map(|j| j.name.as_str()).collect();
    let named: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); def.jobs.len()];
    for (i, job) in def.jobs.iter().enumerate() {
        for (k, name) in job.after.iter().enumerate() {
            let ap = format!("jobs[{i}].after[{k}]");
            match by_name.get(name.as_str()) {
                None => {
                    let hint = did_you_mean(name, named.iter().copied()).or_else(|| {
                        (!named.is_empty() && named.len() <= 20)
                            .then(|| format!("jobs are: {}", named.join(", ")))
                    });
                    issues.push(Issue::new(ap, format!("unknown job {name:?}")).hint(hint));
                }
                Some(&j) if j == i || name == &job.name => {
                    issues.push(Issue::new(
                        ap,
                        format!("job {name:?} cannot run after itself"),
                    ));
                }
                Some(&j) => {
                    if !deps[i].contains(&j) {
                        deps[i].push(j);
                    }
                }
            }
        }
    }
    for cycle in cycles(&deps) {
        let (first, second) = (cycle[0], cycle[1]);
        let k = def.jobs[first]
            .after
            .iter()
            .position(|n| by_name.get(n.as_str()) == Some(&second))
            .unwrap_or(0);
        let text = cycle
            .iter()
            .map(|&j| names[j])
            .collect::<Vec<_>>()
            .join(" -> ");
        issues.push(
            Issue::new(
                format!("jobs[{first}].after[{k}]"),
                format!("cycle: {text}"),
            )
            .hint(Some("remove one of these after entries".to_string())),
        );
    }
    issues
}

/// One cycle per strongly connected component of `deps` (an edge i -> j means
/// job i runs after job j), each as job indices starting and ending at the
/// component's first job, in the order of the jobs. Self-edges are not given.
fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut components: Vec<Vec<usize>> = strongly_connected(deps)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    for c in &mut components {
        c.sort_unstable();
    }
    components.sort_unstable_by_key(|c| c[0]);
    let mut out = Vec::new();
    for comp in components {
        let start = comp[0];
        let members: HashSet<usize> = comp.iter().copied().collect();
        // Breadth-first: the shortest cycle through `start` is the clearest.
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(v) = queue.pop_front() {
            for &w in &deps[v] {
                if w == start {
                    closing = Some(v);
                    break 'search;
                }
                if members.contains(&w) && !parent.contains_key(&w) && w != start {
                    parent.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        // In a strongly connected component the search always closes.
        let Some(mut v) = closing else { continue };
        let mut path = vec![start];
        let mut back = vec![v];
        while let Some(&u) = parent.get(&v) {
            back.push(u);
            v = u;
        }
        // `back` walks back to `start`, the only member without a parent.
        back.reverse();
        path.extend(back.into_iter().filter(|&j| j != start));
        path.push(start);
        out.push(path);
    }
    out
}

/// Tarjan's algorithm, iterative so that a long chain of jobs cannot
/// overflow the stack.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some(&(v, edge)) = calls.last() {
            if let Some(&w) = adj[v].get(edge) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// `did you mean "x"?` for the closest candidate, if it is close enough.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let Some(d) = edit_distance(word, c) else {
            continue;
        };
        let len = word.chars().count().max(c.chars().count());
        if d <= (len / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean {c:?}?"))
}

/// Edit distance over chars where swapping two neighbours counts as one edit
/// (optimal string alignment), since `jbos` for `jobs` is a typical typo.
/// `None` for words too long to be worth it: the cost stays bounded whatever
/// a user writes.
fn edit_distance(a: &str, b: &str) -> Option<usize> {
    const CHARS_MAX: usize = 256;
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > CHARS_MAX || b.len() > CHARS_MAX {
        return None;
    }
    // d[i][j]: distance between the first i chars of a and the first j of b.
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j - 1] + cost)
                .min(d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    Some(d[a.len() * width + b.len()])
}

/// Parses a range: `A..=B` (inclusive), `A..B` (end exclusive) or `A-B`
/// (inclusive, the `--array 1-100` form). Returns inclusive bounds with
/// start <= end.
pub fn parse_range(text: &str) -> Result<(i64, i64), String> {
    let t = text.trim();
    let bad = || format!("invalid range {text:?} (expected A..=B, A..B or A-B, e.g. 1..=100)");
    let num = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    let (start, end) = if let Some((a, b)) = t.split_once("..=") {
        (num(a)?, num(b)?)
    } else if let Some((a, b)) = t.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if b <= a {
            return Err(format!(
                "range {text:?} is empty (the end of A..B is exclusive)"
            ));
        }
        // b > a, so b - 1 cannot overflow.
        (a, b - 1)
    } else if let Some(dash) = t
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '-')
        .map(|(i, _)| i)
    {
        // Skip a leading minus: "-5-5" is -5 to 5.
        (num(&t[..dash])?, num(&t[dash + 1..])?)
    } else {
        return Err(bad());
    };
    if start > end {
        return Err(format!(
            "range {text:?} is empty (start {start} is after end {end})"
        ));
    }
    Ok((start, end))
}

/// A one-job definition for quick submit (`scalable submit -- CMD ...`), with
/// the defaults of SPEC §4: no retries, priority 0, nothing else set.
pub fn quick_job(name: &str, command: Vec<String>, items: Items) -> JobDef {
    JobDef {
        name: name.to_string(),
        command,
        items,
        after: Vec::new(),
        tag: None,
        task: None,
        resources: ResourceRequest::default(),
        retries: 0,
        walltime_ms: None,
        priority: 0,
        inputs: Vec::new(),
        outputs: Vec::new(),
        env: Vec::new(),
        workdir: None,
        features: Vec::new(),
        max_running: None,
        max_fails: None,
        cache: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse_workflow("wf.yaml", text) {
            Ok(def) => panic!("expected errors, got {def:?}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:#?}");
        e.into_iter().next().unwrap_or_default()
    }

    const FULL: &str = r#"workflow: demeter-ssp
max_fails: 10
jobs:
  - name: downscale
    task: run_demeter_scenario
    command: [python, -m, demeter, --scenario, "{{ item }}", 7]
    foreach: [ssp1, ssp2, 3, 4.5, true]
    inputs: ["data/{{ item }}.csv"]
    outputs: ["out/{{ item }}.nc"]
    tag: postprocess
    resources: {cpus: 2, memory: 8G, gpus: 1, custom: {licence: 1}}
    retries: 2
    walltime: "02:00:00"
    priority: 10
    env: {A: b, N: 4, R: "{{ run_id }}"}
    workdir: "runs/{{ index }}"
    features: {size_mb: "{{ item }}", scenario: ssp1}
    max_running: 4
    max_fails: 3
    cache: true
  - name: aggregate
    resources: {memory: 1073741824}
    walltime: 90
    command: [python, aggregate.py]
    after: downscale
  - name: sweep
    command: [sim, "--seed={{ item + 1 }}"]
    range: "0..10"
    after: [downscale, aggregate]
"#;

    #[test]
    fn full_example_parses() {
        let def = parse_workflow("wf.yaml", FULL).unwrap();
        assert_eq!(def.name, "demeter-ssp");
        assert_eq!(def.max_fails, Some(10));
        let d = &def.jobs[0];
        assert_eq!(d.name, "downscale");
        assert_eq!(d.task.as_deref(), Some("run_demeter_scenario"));
        assert_eq!(
            d.command,
            ["python", "-m", "demeter", "--scenario", "{{ item }}", "7"]
        );
        assert_eq!(
            d.items,
            Items::List(vec![
                Item::Str("ssp1".into()),
                Item::Str("ssp2".into()),
                Item::Int(3),
                Item::Float(4.5),
                Item::Bool(true),
            ])
        );
        assert_eq!(d.inputs, ["data/{{ item }}.csv"]);
        assert_eq!(d.outputs, ["out/{{ item }}.nc"]);
        assert_eq!(d.tag.as_deref(), Some("postprocess"));
        assert_eq!(
            d.resources,
            ResourceRequest {
                cpus: Some(2),
                memory_bytes: Some(8 << 30),
                gpus: Some(1),
                custom: vec![("licence".into(), 1)],
            }
        );
        assert_eq!(d.retries, 2);
        assert_eq!(d.walltime_ms, Some(2 * 3600 * 1000));
        assert_eq!(d.priority, 10);
        assert_eq!(
            d.env,
            vec![
                ("A".to_string(), "b".to_string()),
                ("N".to_string(), "4".to_string()),
                ("R".to_string(), "{{ run_id }}".to_string()),
            ]
        );
        assert_eq!(d.workdir.as_deref(), Some("runs/{{ index }}"));
        assert_eq!(
            d.features,
            vec![
                ("size_mb".to_string(), "{{ item }}".to_string()),
                ("scenario".to_string(), "ssp1".to_string()),
            ]
        );
        assert_eq!(d.max_running, Some(4));
        assert_eq!(d.max_fails, Some(3));
        assert!(d.cache);
        assert!(d.after.is_empty());

        let a = &def.jobs[1];
        assert_eq!(a.after, ["downscale"]);
        assert_eq!(a.items, Items::One);
        assert_eq!(a.resources.memory_bytes, Some(1 << 30));
        assert_eq!(a.walltime_ms, Some(90_000));
        assert_eq!(a.retries, 0);
        assert!(!a.cache);

        let s = &def.jobs[2];
        assert_eq!(s.items, Items::Range { start: 0, end: 9 });
        assert_eq!(s.after, ["downscale", "aggregate"]);
        assert_eq!(def.task_count(), 5 + 1 + 10);

        // What the broker does with it.
        let t = JobTemplates::compile(d).unwrap();
        assert_eq!(
            t.argv(d, 3, 12).unwrap(),
            ["python", "-m", "demeter", "--scenario", "4.5", "7"]
        );
        assert_eq!(
            t.env(d, 0, 12).unwrap()[2],
            ("R".to_string(), "12".to_string())
        );
        let t = JobTemplates::compile(s).unwrap();
        assert_eq!(t.argv(s, 9, 1).unwrap(), ["sim", "--seed=10"]);

        // A parsed definition passes the standalone check too.
        validate(&def, "wf.yaml").unwrap();
    }

    #[test]
    fn unknown_key_has_a_hint() {
        assert_eq!(
            one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    retrys: 3\n"),
            "wf.yaml:5:5: jobs[0].retrys: unknown key \"retrys\" (did you mean \"retries\"?)"
        );
        let e = one_error(
            "workflow: w\njobs:\n  - name: a\n    command: [x]\n    resources: {zzz: 1}\n",
        );
        assert_eq!(
            e,
            "wf.yaml:5:17: jobs[0].resources.zzz: unknown key \"zzz\" \
             (valid keys: cpus, memory, gpus, custom)"
        );
        let e = one_error("workflow: w\njbos: []\n");
        assert_eq!(
            e,
            "wf.yaml:2:1: jbos: unknown key \"jbos\" (did you mean \"jobs\"?)"
        );
    }

    #[test]
    fn duplicate_key_is_an_error() {
        assert_eq!(
            one_error("workflow: w\njobs:\n  - name: a\n    name: b\n    command: [x]\n"),
            "wf.yaml:4:5: jobs[0]: duplicate key \"name\" (each key may appear once)"
        );
        let e =
            one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    env: {A: 1, A: 2}\n");
        assert!(
            e.starts_with("wf.yaml:5:17: jobs[0].env: duplicate key \"A\""),
            "{e}"
        );
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    retries: abc\n");
        assert_eq!(
            e,
            "wf.yaml:5:14: jobs[0].retries: expected a whole number from 0 to 4294967295"
        );
        let e = one_error("workflow: w\njobs:\n  - name: [a]\n    command: [x]\n");
        assert!(e.starts_with("wf.yaml:3:11: jobs[0].name: "), "{e}");
        let e = one_error("workflow: w\njobs:\n  - name: a\n    command: [x, null]\n");
        assert!(e.starts_with("wf.yaml:4:18: jobs[0].command[1]: "), "{e}");
        let e = one_error("workflow: w\njobs:\n  - command: [x]\n");
        assert_eq!(e, "wf.yaml:3:5: jobs[0]: missing key \"name\"");
        let e =
            one_error("workflow: w\njobs:\n  - name: a\n    command: [x]\n    foreach: [[1]]\n");
        assert!(e.starts_with("wf.yaml:5:15: jobs[0].foreach[0]: "), "{e}");
        let e = one_error("workflow: w\njobs: [\n");
        assert!(e.starts_with("wf.yaml:"), "{e}");
        assert_eq!(
            one_error(" \n"),
            "wf.yaml: workflow file is empty (start with `workflow: NAME` and a list of `jobs`)"
        );
        let e = one_error("workflow: w\njobs:\n  - name: a\n    command: x\n");
        assert_eq!(e, "wf.yaml:4:14: jobs[0].command: expected a list");
    }

    #[test]
    fn bad_size_and_duration() {
        let e = errors(
            "workflow: w\njobs:\n  - name: a\n    command: [x]\n    resources: {memory: 8X}\n    walltime: soon\n",
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with("wf.yaml:5:25: jobs[0].resources.memory: invalid size \"8X\""),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("wf.yaml:6:15: jobs[0].walltime: invalid duration \"soon\""),
            "{e:#?}"
        );
    }

    #[test]
    fn cycle_is_printed() {
        let text = "workflow: w\njobs:\n  - name: a\n    command: [x]\n    after: [b]\n  - name: b\n    command: [x]\n    after: [c]\n  - name: c\n    command: [x]\n    after: [a]\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:5:13: jobs[0].after[0]: cycle: a -> b -> c -> a \
             (remove one of these after entries)"
        );
        // Two separate cycles and a job that only depends on one: two errors.
        let mut def =
            parse_workflow("w", "workflow: w\njobs:\n  - {name: x, command: [x]}\n").unwrap();
        let job = |n: &str, after: &[&str]| JobDef {
            after: after.iter().map(|s| s.to_string()).collect(),
            ..quick_job(n, vec!["x".into()], Items::One)
        };
        def.jobs = vec![
            job("p", &["q"]),
            job("q", &["p"]),
            job("r", &["p", "s"]),
            job("s", &["t"]),
            job("t", &["s"]),
            job("u", &["u"]),
        ];
        let e = validate(&def, "net").unwrap_err().to_string();
        assert_eq!(
            e,
            "net: jobs[5].after[0]: job \"u\" cannot run after itself\n\
             net: jobs[0].after[0]: cycle: p -> q -> p (remove one of these after entries)\n\
             net: jobs[3].after[0]: cycle: s -> t -> s (remove one of these after entries)"
        );
    }

    #[test]
    fn unknown_after_has_did_you_mean() {
        let text = "workflow: w\njobs:\n  - name: downscale\n    command: [x]\n  - name: b\n    command: [x]\n    after: [dowscale]\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:7:13: jobs[1].after[0]: unknown job \"dowscale\" (did you mean \"downscale\"?)"
        );
        let text = "workflow: w\njobs:\n  - name: downscale\n    command: [x]\n  - name: b\n    command: [x]\n    after: zzz\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:7:12: jobs[1].after[0]: unknown job \"zzz\" (jobs are: downscale, b)"
        );
    }

    #[test]
    fn bad_templates() {
        let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item | nosuchfilter }}\"]\n    foreach: [a]\n";
        let e = one_error(text);
        assert!(
            e.starts_with(
                "wf.yaml:4:18: jobs[0].command[1]: bad template in job \"j\": unknown filter"
            ),
            "{e}"
        );
        let text = "workflow: w\njobs:\n  - name: j\n    command: [x]\n    outputs: [\"{{ undefined_var }}\"]\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:5:15: jobs[0].outputs[0]: bad template in job \"j\": \
             undefined variable \"undefined_var\" (templates know item, index and run_id)"
        );
        let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item }}\"]\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:4:18: jobs[0].command[1]: job \"j\" has no foreach or range, \
             so {{ item }} is undefined"
        );
        let text = "workflow: w\njobs:\n  - name: j\n    command: [x, \"{{ item\"]\n    env: {A: \"{% if %}\"}\n    range: 1..=3\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].contains("jobs[0].command[1]: bad template in job \"j\": syntax error"),
            "{e:#?}"
        );
        assert!(
            e[1].starts_with("wf.yaml:5:14: jobs[0].env.A: bad template"),
            "{e:#?}"
        );
    }

    #[test]
    fn range_forms() {
        assert_eq!(parse_range("1..=1000"), Ok((1, 1000)));
        assert_eq!(parse_range("0..10"), Ok((0, 9)));
        assert_eq!(parse_range(" 1-100 "), Ok((1, 100)));
        assert_eq!(parse_range("-5-5"), Ok((-5, 5)));
        assert_eq!(parse_range("-5..=-1"), Ok((-5, -1)));
        assert_eq!(parse_range("3..=3"), Ok((3, 3)));
        assert!(parse_range("3..3").unwrap_err().contains("is empty"));
        assert!(parse_range("5..=1")
            .unwrap_err()
            .contains("start 5 is after end 1"));
        assert!(parse_range("5")
            .unwrap_err()
            .starts_with("invalid range \"5\""));
        assert!(parse_range("a..b").is_err());
        assert!(parse_range("").is_err());
        assert_eq!(
            parse_range("-9223372036854775808..-9223372036854775807"),
            Ok((i64::MIN, i64::MIN))
        );

        let text = "workflow: w\njobs:\n  - name: j\n    command: [x]\n    range: 1..x\n";
        assert!(one_error(text).starts_with("wf.yaml:5:12: jobs[0].range: invalid range \"1..x\""));
        let text = "workflow: w\njobs:\n  - name: j\n    command: [x]\n    range: 1..=2\n    foreach: [a]\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:5:12: jobs[0].range: foreach and range are exclusive (keep one of them)"
        );
    }

    #[test]
    fn all_semantic_errors_with_lines() {
        let text = "\
workflow: \"\"
jobs:
  - name: a b
    command: []
    retries: 101
    resources: {cpus: 0}
  - name: ok
    command: [x]
    foreach: []
    max_running: 0
  - name: ok
    command: [x]
";
        let e = errors(text);
        assert_eq!(
            e,
            [
                "wf.yaml:1:11: workflow: workflow name is empty",
                "wf.yaml:3:11: jobs[0].name: invalid job name \"a b\" (use letters, digits, \"_\", \".\" and \"-\")",
                "wf.yaml:4:14: jobs[0].command: command is empty (give the argv as a list, e.g. [python, run.py])",
                "wf.yaml:5:14: jobs[0].retries: retries 101 is more than the limit of 100",
                "wf.yaml:6:23: jobs[0].resources.cpus: cpus must be at least 1",
                "wf.yaml:9:14: jobs[1].foreach: foreach is empty",
                "wf.yaml:10:18: jobs[1].max_running: max_running must be at least 1 (leave it out for no limit)",
                "wf.yaml:11:11: jobs[2].name: duplicate job name \"ok\" (first defined at line 7)",
            ]
        );
        assert_eq!(
            one_error("workflow: w\njobs: []\n"),
            "wf.yaml:2:7: jobs: workflow has no jobs (add at least one job with a name and a command)"
        );
    }

    #[test]
    fn million_task_range_is_one_job() {
        let text = "workflow: big\njobs:\n  - name: sweep\n    command: [sim, \"{{ item }}\"]\n    range: \"1..=1000000\"\n";
        let def = parse_workflow("wf.yaml", text).unwrap();
        assert_eq!(def.jobs.len(), 1);
        assert_eq!(
            def.jobs[0].items,
            Items::Range {
                start: 1,
                end: 1_000_000
            }
        );
        assert_eq!(def.task_count(), 1_000_000);

        let text = "workflow: big\njobs:\n  - name: sweep\n    command: [sim]\n    range: \"1..=10000001\"\n";
        assert_eq!(
            one_error(text),
            "wf.yaml:5:12: jobs[0].range: job \"sweep\" has 10000001 tasks, \
             more than the limit of 10000000 per run"
        );
        let text = "workflow: big\njobs:\n  - name: a\n    command: [sim]\n    range: \"1..=6000000\"\n  - name: b\n    command: [sim]\n    range: \"1..=6000000\"\n";
        assert!(one_error(text).contains("jobs: workflow has 12000000 tasks"));
    }

    #[test]
    fn standalone_validate_has_paths_without_lines() {
        let mut job = quick_job(
            "",
            vec![],
            Items::Range {
                start: i64::MIN,
                end: i64::MAX,
            },
        );
        job.after = vec!["nope".into()];
        let def = WorkflowDef {
            name: "w".into(),
            max_fails: None,
            jobs: vec![job],
        };
        let e = validate(&def, "submitted").unwrap_err();
        let lines: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines[0], "submitted: jobs[0].name: job name is empty");
        assert_eq!(lines[1], "submitted: jobs[0].command: command is empty (give the argv as a list, e.g. [python, run.py])");
        assert!(lines[2]
            .starts_with("submitted: jobs[0].range: job \"\" has 18446744073709551615 tasks"));
        assert_eq!(
            lines[3],
            "submitted: jobs[0].after[0]: unknown job \"nope\""
        );
        assert!(e.0.iter().all(|e| e.line == 0));
    }

    #[test]
    fn quick_job_defaults() {
        let job = quick_job(
            "q",
            vec!["echo".into(), "{{ index }}".into()],
            Items::Range { start: 1, end: 100 },
        );
        assert_eq!(job.retries, 0);
        assert_eq!(job.priority, 0);
        assert!(job.after.is_empty() && job.env.is_empty() && job.tag.is_none());
        let def = WorkflowDef {
            name: "q".into(),
            max_fails: None,
            jobs: vec![job],
        };
        validate(&def, "cli").unwrap();
    }

    #[test]
    fn did_you_mean_is_picky() {
        assert_eq!(
            did_you_mean("retrys", ["retries", "range"]),
            Some("did you mean \"retries\"?".into())
        );
        assert_eq!(did_you_mean("x", ["tag", "env"]), None);
        assert_eq!(did_you_mean(&"a".repeat(1000), ["a"]), None);
        assert_eq!(edit_distance("jbos", "jobs"), Some(1));
        assert_eq!(edit_distance("kitten", "sitting"), Some(3));
        assert_eq!(edit_distance("", "abc"), Some(3));
    }
}
