//! The workflow as the broker, the agent and the wire protocol see it:
//! `WorkflowDef`, `JobDef`, `Items` and their small helpers.
//!
//! These types travel in `Submit` and are stored as JSON with each run, so
//! their shape is part of the protocol. This module must not parse YAML nor
//! check anything: `raw`/`convert` build these types from a file, `check`
//! judges them.

use serde::{Deserialize, Serialize};

/// A whole workflow: what `submit` sends to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    pub name: String,
    /// Stop scheduling new tasks after this many failed tasks.
    pub max_fails: Option<u64>,
    pub jobs: Vec<JobDef>,
}

impl WorkflowDef {
    /// Tasks over all jobs (what `submit --json` prints as `tasks`).
    pub fn task_count(&self) -> u64 {
        self.jobs
            .iter()
            .fold(0u64, |n, j| n.saturating_add(j.items.count_saturating()))
    }
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
    /// Per-item dependencies (`after: [{job: x, per: item}]`, SPEC §4): each
    /// task waits only for the task of `job` with the same item or index.
    /// Added with protocol 7; a run stored before it reads as none.
    #[serde(default)]
    pub after_per: Vec<PerAfter>,
    /// `checkpoint:` paths relative to the task's directory (SPEC §4): what
    /// an attempt cut short through no fault of its own wrote there is kept
    /// and restored for the task's next attempt. Added with protocol 7.
    #[serde(default)]
    pub checkpoint: Vec<String>,
}

/// One per-item entry of `after`: wait for the matching task of `job`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerAfter {
    pub job: String,
    pub per: Per,
}

/// How a task finds the task it waits for in the upstream job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Per {
    /// The upstream task with the same item (both jobs have the same items).
    Item,
    /// The upstream task with the same index (both jobs have as many tasks).
    Index,
}

impl Per {
    pub fn name(self) -> &'static str {
        match self {
            Per::Item => "item",
            Per::Index => "index",
        }
    }
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

    /// The index (0-based) of the first task whose item reads `item` as
    /// [`Item`]'s `Display` writes it (`4`, `ssp1`, `0.5`); `None` when no
    /// task has it, and always for `Items::One`.
    pub fn index_of(&self, item: &str) -> Option<u64> {
        match self {
            Items::One => None,
            Items::List(v) => v
                .iter()
                .position(|i| i.to_string() == item)
                .map(|i| i as u64),
            Items::Range { start, end } => {
                let n: i64 = item.trim().parse().ok()?;
                (*start..=*end)
                    .contains(&n)
                    .then(|| (i128::from(n) - i128::from(*start)) as u64)
            }
        }
    }

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
        after_per: Vec::new(),
        checkpoint: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, item 7: a task is named by its item as well as its index.
    #[test]
    fn index_of_finds_the_task_of_an_item() {
        let range = Items::Range { start: 1, end: 5 };
        assert_eq!(range.index_of("4"), Some(3));
        assert_eq!(range.get(3), Some(Item::Int(4)));
        assert_eq!(range.index_of("0"), None);
        assert_eq!(range.index_of("6"), None);
        assert_eq!(range.index_of("x"), None);
        let list = Items::List(vec![
            Item::Str("ssp1".into()),
            Item::Float(0.5),
            Item::Str("ssp1".into()),
        ]);
        assert_eq!(list.index_of("ssp1"), Some(0));
        assert_eq!(list.index_of("0.5"), Some(1));
        assert_eq!(list.index_of("ssp9"), None);
        assert_eq!(Items::One.index_of("0"), None);
        let wide = Items::Range {
            start: i64::MIN,
            end: i64::MAX,
        };
        assert_eq!(wide.index_of("-9223372036854775808"), Some(0));
        assert_eq!(wide.index_of("9223372036854775807"), Some(u64::MAX));
    }
}
