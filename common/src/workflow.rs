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
