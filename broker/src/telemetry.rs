//! A run's telemetry as rows (SPEC §10, issue 16): what `scalable export`
//! writes, one JSON line per row, and the fields `docs/telemetry.md` lists.
//!
//! Owns the row types, the line format (`{"table": ..., fields}`), the
//! values derived from stored ones (queue wait, run time, cpu utilisation,
//! a live pilot's cost so far) and the export cursor. It must not issue SQL
//! (the store fills the rows) nor print (the CLI writes the lines).

use serde::Serialize;

/// One exported row; serialised with its table's name in `table`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Line {
    Run(RunRow),
    Job(JobRow),
    Task(TaskRow),
    Attempt(Box<AttemptRow>),
    Usage(UsageRow),
    Agent(AgentRow),
    Pilot(PilotRow),
}

impl Line {
    /// The row as one line of JSON with its newline.
    pub fn to_jsonl(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run: u64,
    pub name: String,
    pub state: String,
    pub submitted_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub cwd: String,
    /// Tasks of every job.
    pub tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub run: u64,
    pub job: u64,
    pub name: String,
    pub tag: Option<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub retries: u32,
    pub tasks: u64,
}

/// A task that did something (an attempt, a final state); tasks still
/// waiting or ready without an attempt have no row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    pub run: u64,
    pub job: u64,
    pub task: u64,
    pub index: u64,
    pub state: String,
    pub attempts: u32,
    pub retries_used: u32,
    pub crashes: u32,
    pub reason: Option<String>,
    pub updated_at_ms: u64,
}

/// One attempt. Broker times are `_ms` (the broker's clock); the process's
/// start and end are `_us` (the agent's clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRow {
    pub run: u64,
    pub job: u64,
    pub job_name: String,
    pub task: u64,
    pub index: u64,
    pub attempt: u64,
    pub number: u32,
    pub tag: Option<String>,
    pub agent: u64,
    pub host: Option<String>,
    pub target: Option<String>,
    pub pilot: Option<String>,
    pub provider: Option<String>,
    pub ready_at_ms: Option<u64>,
    pub assigned_at_ms: u64,
    pub started_at_us: Option<u64>,
    pub ended_at_us: Option<u64>,
    /// Started - ready: how long the ready task waited to run.
    pub queue_wait_ms: Option<u64>,
    /// Ended - started.
    pub run_time_ms: Option<u64>,
    pub end_class: Option<String>,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
    pub spends_retry: Option<bool>,
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub gpus: Option<u32>,
    pub custom_resources: Option<serde_json::Value>,
    pub request_source: Option<String>,
    /// How an advisor sized it (`memory: auto`, schema 6); null otherwise.
    pub request_model: Option<String>,
    pub request_confidence: Option<f64>,
    pub request_detail: Option<String>,
    pub predicted_memory_bytes: Option<u64>,
    pub predicted_run_time_ms: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_time_us: Option<u64>,
    /// Cpu time / run time: the cores it kept busy on average.
    pub cpu_utilisation: Option<f64>,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub input_bytes: Option<u64>,
    pub input_sizes: Option<serde_json::Value>,
    /// What staging moved (schema 7; `None` with a shared filesystem):
    /// inputs and a restored checkpoint in, declared outputs out, checkpoint
    /// snapshots uploaded.
    pub stage_in_bytes: Option<u64>,
    pub stage_in_ms: Option<u64>,
    pub stage_out_bytes: Option<u64>,
    pub stage_out_ms: Option<u64>,
    pub checkpoint_bytes: Option<u64>,
    pub checkpoint_ms: Option<u64>,
    /// The job's `features:` rendered for this task (with `--feature k=v`),
    /// as the advisors see them; `None` without features.
    pub features: Option<std::collections::BTreeMap<String, String>>,
}

impl AttemptRow {
    /// Fills the derived fields from the stored ones.
    pub fn derive(&mut self) {
        self.queue_wait_ms = match (self.started_at_us, self.ready_at_ms) {
            (Some(s), Some(r)) => Some((s / 1_000).saturating_sub(r)),
            _ => None,
        };
        self.run_time_ms = match (self.started_at_us, self.ended_at_us) {
            (Some(s), Some(e)) if e >= s => Some((e - s) / 1_000),
            _ => None,
        };
        self.cpu_utilisation = match (self.cpu_time_us, self.started_at_us, self.ended_at_us) {
            (Some(cpu), Some(s), Some(e)) if e > s => Some(cpu as f64 / (e - s) as f64),
            _ => None,
        };
    }
}

/// One interval of a long attempt's usage series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub attempt: u64,
    pub at_ms: u64,
    pub cpu_ms: u64,
    pub rss_bytes: u64,
}

/// An agent that ran an attempt of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    pub agent: u64,
    pub name: String,
    pub host: String,
    pub tags: Vec<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub connected_at_ms: u64,
    pub left_at_ms: Option<u64>,
    pub left_reason: Option<String>,
    /// `SCALABLE_PILOT_ID` as the agent reported it.
    pub reported_pilot_id: Option<String>,
    /// The pilot of this broker it was matched to, and that pilot's target.
    pub pilot: Option<String>,
    pub target: Option<String>,
    pub provider: Option<String>,
}

/// A pilot whose agent ran an attempt of the run, or that was submitted
/// while the run was going.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PilotRow {
    pub pilot: String,
    pub target: String,
    pub tag: Option<String>,
    pub provider: Option<String>,
    pub provider_id: String,
    pub state: String,
    pub agent: Option<u64>,
    pub submitted_at_ms: u64,
    pub connected_at_ms: Option<u64>,
    /// Connected - submitted.
    pub queue_wait_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    pub reason: Option<String>,
    pub price_per_hour: Option<f64>,
    /// The stored cost of an ended pilot, or the cost so far of a live one.
    pub cost: Option<f64>,
}

impl PilotRow {
    /// Fills the derived fields; a live pilot's cost runs to `now_ms`.
    pub fn derive(&mut self, now_ms: u64) {
        self.queue_wait_ms = self
            .connected_at_ms
            .map(|c| c.saturating_sub(self.submitted_at_ms));
        if self.ended_at_ms.is_none() {
            self.cost = self
                .price_per_hour
                .map(|p| p * now_ms.saturating_sub(self.submitted_at_ms) as f64 / 3_600_000.0);
        }
    }
}

/// The tables in export order; the cursor says which one and after which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Run = 0,
    Jobs = 1,
    Tasks = 2,
    Attempts = 3,
    Usage = 4,
    Agents = 5,
    Pilots = 6,
}

impl Section {
    pub const ALL: [Section; 7] = [
        Section::Run,
        Section::Jobs,
        Section::Tasks,
        Section::Attempts,
        Section::Usage,
        Section::Agents,
        Section::Pilots,
    ];
}

/// Bits of a cursor that hold the key within a section (ids stay far below).
const KEY_BITS: u32 = 56;

/// Where an export page starts: the section, and the last key sent in it
/// (`None`: from its start). Sent to the CLI as one growing `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub section: Section,
    pub after: Option<u64>,
}

impl Cursor {
    pub const START: Cursor = Cursor {
        section: Section::Run,
        after: None,
    };

    /// The cursor after key `key` of `section`. Grows with both, so the
    /// CLI's check that pages advance holds.
    pub fn encode(section: Section, key: u64) -> u64 {
        ((section as u64) << KEY_BITS) | (key & ((1 << KEY_BITS) - 1))
    }

    pub fn decode(at: Option<u64>) -> Cursor {
        let Some(at) = at else {
            return Cursor::START;
        };
        let index = (at >> KEY_BITS) as usize;
        let section = Section::ALL.get(index).copied().unwrap_or(Section::Pilots);
        Cursor {
            section,
            after: Some(at & ((1 << KEY_BITS) - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_grows_across_sections() {
        let a = Cursor::encode(Section::Tasks, 99);
        let b = Cursor::encode(Section::Attempts, 1);
        assert!(a < b);
        assert_eq!(
            Cursor::decode(Some(b)),
            Cursor {
                section: Section::Attempts,
                after: Some(1)
            }
        );
        assert_eq!(Cursor::decode(None), Cursor::START);
    }

    #[test]
    fn a_line_names_its_table_and_a_live_pilot_costs_so_far() {
        let mut p = PilotRow {
            pilot: "p-1".into(),
            target: "hpc".into(),
            tag: None,
            provider: Some("slurm".into()),
            provider_id: "42".into(),
            state: "connected".into(),
            agent: Some(3),
            submitted_at_ms: 0,
            connected_at_ms: Some(30_000),
            queue_wait_ms: None,
            ended_at_ms: None,
            reason: None,
            price_per_hour: Some(2.0),
            cost: None,
        };
        p.derive(1_800_000);
        assert_eq!((p.queue_wait_ms, p.cost), (Some(30_000), Some(1.0)));
        let line = Line::Pilot(p).to_jsonl();
        assert!(
            line.starts_with(r#"{"table":"pilot","pilot":"p-1""#),
            "{line}"
        );
        assert!(line.ends_with("}\n"));
    }
}
