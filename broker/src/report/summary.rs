//! The figures every format of the report shows, computed once from
//! [`ReportData`]: workers per tag, scaling events, the pegasus-statistics
//! totals, the per-job breakdown, failures by reason class, badput and
//! queue wait.
//!
//! Pure: data in, figures out. It must not word anything (the renderers
//! do) nor read the store.

use std::collections::BTreeMap;

use serde::Serialize;

use super::accountability::{self, Accountability};
use super::model::{AttemptRow, JobRow, ReportData};

/// The tag agents without one are counted under.
pub const UNTAGGED: &str = "untagged";

/// What staging moved over the run (agents without a shared filesystem):
/// the sums of the attempts' transfers, and how many attempts staged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StagedTotals {
    pub moved: scalable_common::staging::Transfers,
    pub attempts: usize,
}

/// `None` when no attempt staged anything (a shared filesystem).
pub fn staged_totals(d: &ReportData) -> Option<StagedTotals> {
    let mut t = StagedTotals::default();
    for m in d.attempts.iter().filter_map(|a| a.transfers) {
        let sum = &mut t.moved;
        sum.in_bytes = sum.in_bytes.saturating_add(m.in_bytes);
        sum.in_ms = sum.in_ms.saturating_add(m.in_ms);
        sum.out_bytes = sum.out_bytes.saturating_add(m.out_bytes);
        sum.out_ms = sum.out_ms.saturating_add(m.out_ms);
        sum.checkpoint_bytes = sum.checkpoint_bytes.saturating_add(m.checkpoint_bytes);
        sum.checkpoint_ms = sum.checkpoint_ms.saturating_add(m.checkpoint_ms);
        t.attempts += 1;
    }
    (t.attempts > 0).then_some(t)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub workers: Vec<WorkersOfTag>,
    pub scaling: ScalingEvents,
    /// From submit to the run's end (or the report's time).
    pub wall_time_ms: u64,
    /// Sum of the run times of every attempt that ran.
    pub cumulative_run_time_ms: u64,
    /// Run time of attempts that did not succeed.
    pub badput_ms: u64,
    pub attempts: u64,
    pub queue_wait: QueueWait,
    pub jobs: Vec<JobBreakdown>,
    /// Ended attempts by class, most frequent first (successes included).
    pub ends_by_class: Vec<ClassCount>,
    /// The advisor's predictions against what happened (issue 17).
    pub accountability: Accountability,
}

/// Seed 002's workers block: agents that served the run, per tag.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkersOfTag {
    pub tag: String,
    pub started: u64,
    pub removed: u64,
    #[serde(rename = "final")]
    pub final_: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScalingEvents {
    pub scale_up: u64,
    pub scale_down: u64,
    /// `decisions` (the scaler's records) or `pilots` (pilots submitted or
    /// scaled down together count as one event).
    pub source: String,
}

/// From when an attempt could start (its task ready, else assigned) to when
/// it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueWait {
    /// `ready` or `assigned`: what the wait is counted from.
    pub from: String,
    pub attempts: u64,
    pub mean_ms: u64,
    pub max_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobBreakdown {
    pub job: String,
    pub tasks: u64,
    pub attempts: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Over successful attempts.
    pub run_time_ms: Option<MinMeanMax>,
    /// Over attempts that ran and reported it.
    pub peak_rss_bytes: Option<MinMeanMax>,
    /// Cores used: cpu time over run time, mean over attempts that ran.
    pub cpu_cores_mean: Option<f64>,
    /// The cores used as a percentage of the cpus requested.
    pub cpu_used_pct_mean: Option<f64>,
    /// Peak RSS as a percentage of the memory requested (none: no request).
    pub memory_used_pct_mean: Option<f64>,
    pub memory_used_pct_max: Option<f64>,
    pub badput_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MinMeanMax {
    pub min: u64,
    pub mean: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    pub class: String,
    pub count: u64,
}

/// Attempts shorter than this have no cpu utilisation: their cpu time and
/// run time are measured too coarsely for a ratio (Nextflow warns alike).
pub const CPU_RUN_TIME_MIN_US: u64 = 100_000;

/// Cores used over an attempt's run: cpu time over run time; `None` when
/// not measured or the run was too short to tell.
pub fn cores_used(a: &AttemptRow) -> Option<f64> {
    let t = run_time_us(a).filter(|t| *t >= CPU_RUN_TIME_MIN_US)?;
    Some(a.cpu_time_us? as f64 / t as f64)
}

/// When the run ended, or the report's time for a run still going.
pub fn end_ms(d: &ReportData) -> u64 {
    d.run.finished_at_ms.unwrap_or(d.run.generated_at_ms)
}

/// How long an attempt ran, in microseconds; `None`: it did not start and end.
pub fn run_time_us(a: &AttemptRow) -> Option<u64> {
    Some(a.ended_at_us?.saturating_sub(a.started_at_us?))
}

/// When an attempt could start (ms): its task's ready time, else its
/// assignment.
pub fn wait_from_ms(a: &AttemptRow) -> u64 {
    a.ready_at_ms.unwrap_or(a.assigned_at_ms)
}

/// Its queue wait in ms; `None`: it never started.
pub fn wait_ms(a: &AttemptRow) -> Option<u64> {
    Some((a.started_at_us? / 1000).saturating_sub(wait_from_ms(a)))
}

pub fn summarize(d: &ReportData) -> Summary {
    let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut cumulative_us, mut bad_us) = (0u64, 0u64);
    for a in &d.attempts {
        if let Some(class) = &a.end_class {
            *ends.entry(class).or_default() += 1;
        }
        if let Some(t) = run_time_us(a) {
            cumulative_us += t;
            if a.end_class.as_deref() != Some("SUCCESS") {
                bad_us += t;
            }
        }
    }
    let mut ends_by_class: Vec<ClassCount> = ends
        .into_iter()
        .map(|(class, count)| ClassCount {
            class: class.to_string(),
            count,
        })
        .collect();
    ends_by_class.sort_by(|a, b| b.count.cmp(&a.count).then(a.class.cmp(&b.class)));
    Summary {
        workers: workers(d),
        scaling: scaling(d),
        wall_time_ms: end_ms(d).saturating_sub(d.run.submitted_at_ms),
        cumulative_run_time_ms: cumulative_us / 1000,
        badput_ms: bad_us / 1000,
        attempts: d.attempts.len() as u64,
        queue_wait: queue_wait(d),
        jobs: {
            let by_job = by_job(d);
            d.jobs
                .iter()
                .map(|j| job_breakdown(j, by_job.get(&j.id).map_or(&[][..], Vec::as_slice)))
                .collect()
        },
        ends_by_class,
        accountability: accountability::of(&d.predictions),
    }
}

/// The attempts of each job, in one pass (a report may hold a million).
pub fn by_job(d: &ReportData) -> BTreeMap<u64, Vec<&AttemptRow>> {
    let mut m: BTreeMap<u64, Vec<&AttemptRow>> = BTreeMap::new();
    for a in &d.attempts {
        m.entry(a.job_id).or_default().push(a);
    }
    m
}

fn workers(d: &ReportData) -> Vec<WorkersOfTag> {
    let end = end_ms(d);
    let mut by_tag: BTreeMap<String, WorkersOfTag> = BTreeMap::new();
    for agent in &d.agents {
        let untagged = [UNTAGGED.to_string()];
        let tags = if agent.tags.is_empty() {
            &untagged[..]
        } else {
            &agent.tags[..]
        };
        for tag in tags {
            let w = by_tag.entry(tag.clone()).or_insert_with(|| WorkersOfTag {
                tag: tag.clone(),
                ..WorkersOfTag::default()
            });
            w.started += 1;
            if agent.left_at_ms.is_some_and(|l| l <= end) {
                w.removed += 1;
            } else {
                w.final_ += 1;
            }
        }
    }
    by_tag.into_values().collect()
}

fn scaling(d: &ReportData) -> ScalingEvents {
    if !d.scaling_decisions.is_empty() {
        let up = d.scaling_decisions.iter().filter(|s| s.after > s.before);
        let down = d.scaling_decisions.iter().filter(|s| s.after < s.before);
        return ScalingEvents {
            scale_up: up.count() as u64,
            scale_down: down.count() as u64,
            source: "decisions".into(),
        };
    }
    let mut ups: Vec<(Option<&str>, u64)> = d
        .pilots
        .iter()
        .map(|p| (p.tag.as_deref(), p.submitted_at_ms))
        .collect();
    let mut downs: Vec<(Option<&str>, Option<u64>)> = d
        .pilots
        .iter()
        .filter(|p| {
            p.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("scaled down"))
        })
        .map(|p| (p.tag.as_deref(), p.ended_at_ms))
        .collect();
    ups.sort_unstable();
    ups.dedup();
    downs.sort_unstable();
    downs.dedup();
    ScalingEvents {
        scale_up: ups.len() as u64,
        scale_down: downs.len() as u64,
        source: "pilots".into(),
    }
}

fn queue_wait(d: &ReportData) -> QueueWait {
    let waits: Vec<u64> = d.attempts.iter().filter_map(wait_ms).collect();
    let total: u64 = waits.iter().sum();
    let from = if d.attempts.iter().any(|a| a.ready_at_ms.is_some()) {
        "ready"
    } else {
        "assigned"
    };
    QueueWait {
        from: from.into(),
        attempts: waits.len() as u64,
        mean_ms: if waits.is_empty() {
            0
        } else {
            total / waits.len() as u64
        },
        max_ms: waits.iter().copied().max().unwrap_or(0),
        total_ms: total,
    }
}

fn min_mean_max(values: &[u64]) -> Option<MinMeanMax> {
    let sum: u128 = values.iter().map(|&v| v as u128).sum();
    Some(MinMeanMax {
        min: *values.iter().min()?,
        mean: (sum / values.len() as u128) as u64,
        max: *values.iter().max()?,
    })
}

/// Three decimals: what a person reads, and stable in JSON.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| round3(values.iter().sum::<f64>() / values.len() as f64))
}

/// One job's figures (pegasus-statistics' breakdown plus Nextflow's
/// percentages of the request).
fn job_breakdown(job: &JobRow, of_job: &[&AttemptRow]) -> JobBreakdown {
    let (mut ok_ms, mut rss, mut cores, mut cpu_pct, mut mem_pct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut attempts, mut bad_us) = (0u64, 0u64);
    for a in of_job {
        attempts += 1;
        let req = a.requested.clone();
        let req_cpus = req.as_ref().map_or(job.cpus, |r| r.cpus);
        let req_mem = req.as_ref().map_or(job.memory_bytes, |r| r.memory_bytes);
        let Some(t) = run_time_us(a) else { continue };
        if a.end_class.as_deref() == Some("SUCCESS") {
            ok_ms.push(t / 1000);
        } else {
            bad_us += t;
        }
        if let Some(peak) = a.peak_rss_bytes {
            rss.push(peak);
            if req_mem > 0 {
                mem_pct.push(peak as f64 * 100.0 / req_mem as f64);
            }
        }
        if let Some(used) = cores_used(a) {
            cores.push(used);
            if req_cpus > 0 {
                cpu_pct.push(used * 100.0 / req_cpus as f64);
            }
        }
    }
    JobBreakdown {
        job: job.name.clone(),
        tasks: job.task_count,
        attempts,
        succeeded: job.succeeded,
        failed: job.failed,
        run_time_ms: min_mean_max(&ok_ms),
        peak_rss_bytes: min_mean_max(&rss),
        cpu_cores_mean: mean(&cores),
        cpu_used_pct_mean: mean(&cpu_pct),
        memory_used_pct_mean: mean(&mem_pct),
        memory_used_pct_max: mem_pct.iter().copied().reduce(f64::max).map(round3),
        badput_ms: bad_us / 1000,
    }
}
