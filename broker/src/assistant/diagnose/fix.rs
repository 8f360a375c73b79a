//! What to do about a root cause: a recommendation in words and, where the
//! store's numbers allow one, a fix as an overlay (`fix-oom`: the
//! component's memory from the measured peaks through the ResourceAdvisor;
//! `fix-timeout`: the task binding's walltime) or, for a job no manifest
//! binds, a workflow edit.
//!
//! Must not: validate (the CLI does, against the user's manifest or a
//! minimal one) or print.

use serde::Serialize;

use super::classify::Finding;
use crate::advisor::advice::{memory_text, walltime_text};
use crate::advisor::quantile::{recommend, QuantileConfig};
use crate::advisor::{Features, Outcome, Sample};
use crate::assistant::yaml::Yaml;
use crate::report::model::JobRow;
use crate::report::ReportData;
use scalable_common::manifest::Manifest;
use scalable_common::units::format_size;

/// A killed attempt whose peak reached this share of its limit says only
/// that the need is larger: the fix then doubles the limit at least.
const PEAK_AT_LIMIT: f64 = 0.9;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fix {
    /// The overlay's name (`fix-oom`), or the job's for a workflow edit.
    pub name: String,
    /// `overlay` or `workflow`.
    pub kind: String,
    /// The YAML to paste: `overlays: {NAME: ...}` or the job's keys.
    pub yaml: String,
    /// For an overlay: the component or task binding it changes.
    pub changes: String,
    /// Filled by the CLI: how the fix was validated.
    pub validated: String,
    /// The overlay's body (not serialised: `yaml` carries it).
    #[serde(skip)]
    pub overlay: Option<Yaml>,
}

pub fn propose(
    class: &str,
    job: Option<&JobRow>,
    data: &ReportData,
    manifest: Option<&Manifest>,
    fs: &[&Finding],
) -> (String, Option<Fix>) {
    let name = job.map(|j| j.name.as_str()).unwrap_or("?");
    match class {
        "MEMORY_EXHAUSTION" => match job {
            Some(j) => oom(j, data, manifest),
            None => ("raise the job's memory".into(), None),
        },
        "TIMEOUT" => match job {
            Some(j) => timeout(j, data, manifest),
            None => ("raise the job's walltime".into(), None),
        },
        "INVALID_INPUT" => (
            format!(
                "make the missing input exist before job {name} starts: add its directory to the component's mounts: (containers) or copy it into the task's directory; `scalable logs {} --stderr` shows the path",
                fs.first().map(|f| f.task.as_str()).unwrap_or("RUN/JOB/INDEX")
            ),
            None,
        ),
        "IMAGE_ERROR" => (
            "the container image could not be pulled or found: check the component's image: name and tag, the registry login on the agents' hosts, and that the target's containers: runtime can read it".into(),
            None,
        ),
        "MOUNT_ERROR" => (
            "a bind mount's host path is missing or refused: create it on every agent host or fix the component's mounts:".into(),
            None,
        ),
        "AGENT_LOST" => (
            "the agent running these attempts was lost (its retry was not spent); if it recurs, check the host and the pilot's walltime against the tasks' run time (`scalable pilots`, `scalable agents`)".into(),
            None,
        ),
        "EXIT_CODE" => (
            format!(
                "the command of job {name} failed on its own: read `scalable logs {} --stderr`; a retry will not help unless the failure is transient",
                fs.first().map(|f| f.task.as_str()).unwrap_or("RUN/JOB/INDEX")
            ),
            None,
        ),
        "SIGNALED" => (
            "killed by a signal from outside Scalable (the scheduler, the OOM killer of the host, a user): check the host's logs".into(),
            None,
        ),
        "OUTPUTS_MISSING" => (
            format!("job {name} exited 0 without writing its declared outputs: fix the outputs: paths or the command"),
            None,
        ),
        _ => (format!("see `scalable analyze {}`", data.run.id), None),
    }
}

/// The component a job runs as: its tag, when the manifest (if given) has
/// a component of that name.
fn component_of(job: &JobRow, manifest: Option<&Manifest>) -> Option<String> {
    let tag = job.tag.clone()?;
    match manifest {
        Some(m) if !m.components.contains_key(&tag) => None,
        _ => Some(tag),
    }
}

fn samples(job: &JobRow, data: &ReportData) -> Vec<Sample> {
    data.attempts
        .iter()
        .filter(|a| a.job_id == job.id)
        .filter_map(|a| {
            let outcome = match a.end_class.as_deref() {
                Some("SUCCESS") => Outcome::Succeeded,
                Some("MEMORY_EXHAUSTION") => Outcome::MemoryKilled,
                _ => return None,
            };
            Some(Sample {
                task_type: job.name.clone(),
                tag: job.tag.clone(),
                target: String::new(),
                run: data.run.id,
                features: Features::new(),
                peak_memory_bytes: a.peak_rss_bytes,
                cpu_time_us: a.cpu_time_us,
                started_at_us: a.started_at_us,
                ended_at_us: a.ended_at_us,
                outcome,
                // What the attempt's request was is not an advice here.
                advised_memory_bytes: None,
            })
        })
        .collect()
}

fn oom(job: &JobRow, data: &ReportData, manifest: Option<&Manifest>) -> (String, Option<Fix>) {
    let samples = samples(job, data);
    let refs: Vec<&Sample> = samples.iter().collect();
    let advised = recommend(&job.name, &refs, &QuantileConfig::default())
        .evidence
        .memory_bytes;
    let killed = data
        .attempts
        .iter()
        .filter(|a| a.job_id == job.id && a.end_class.as_deref() == Some("MEMORY_EXHAUSTION"));
    let at_limit = killed
        .filter_map(|a| Some((a.peak_rss_bytes?, a.memory_limit_bytes?)))
        .filter(|(p, l)| *p as f64 >= PEAK_AT_LIMIT * *l as f64)
        .map(|(_, l)| l)
        .max();
    let floor = at_limit.map_or(0, |l| l.saturating_mul(2));
    let memory = memory_text(advised.max(floor).max(job.memory_bytes + 1));
    let why = match at_limit {
        Some(l) => format!(
            "the peaks reached the limit {} (the need is larger and unmeasured), so at least twice it; the advisor says {}",
            format_size(l),
            memory_text(advised)
        ),
        None => format!(
            "the ResourceAdvisor's memory from the measured peaks (killed peaks x 1.2, +10%): {}",
            memory_text(advised)
        ),
    };
    match component_of(job, manifest) {
        Some(component) => {
            let mut body = Yaml::map();
            body.entry("components")
                .entry(&component)
                .set("memory", Yaml::str(&memory));
            (
                format!("give component {component} memory {memory} ({why}): apply the overlay fix-oom (scalable submit --manifest M --overlay fix-oom ...)"),
                Some(overlay("fix-oom", body, format!("components.{component}.memory"))),
            )
        }
        None => (
            format!(
                "give job {} resources: {{memory: {memory}}} ({why})",
                job.name
            ),
            Some(workflow_edit(job, "resources", {
                let mut r = Yaml::map();
                r.set("memory", Yaml::str(&memory));
                r
            })),
        ),
    }
}

fn timeout(job: &JobRow, data: &ReportData, manifest: Option<&Manifest>) -> (String, Option<Fix>) {
    let wall_ms = job.walltime_ms.unwrap_or(0);
    let ok_runs = data
        .attempts
        .iter()
        .filter(|a| a.job_id == job.id && a.end_class.as_deref() == Some("SUCCESS"));
    let longest_ok_s = ok_runs
        .filter_map(|a| Some(a.ended_at_us?.saturating_sub(a.started_at_us?)))
        .max()
        .map_or(0.0, |us| us as f64 / 1e6 * 1.1);
    let new_s = (wall_ms as f64 / 1000.0 * 2.0).max(longest_ok_s).max(60.0);
    let walltime = walltime_text(new_s);
    let why = format!(
        "twice the walltime {} that ended them, at least a minute{}",
        walltime_text(wall_ms as f64 / 1000.0),
        if longest_ok_s > 0.0 {
            ", and above the longest successful run +10%"
        } else {
            ""
        }
    );
    let binding = manifest.and_then(|m| {
        let tag = job.tag.as_deref()?;
        let bound: Vec<&String> = m
            .tasks
            .values()
            .filter(|b| b.component == tag)
            .map(|b| &b.name)
            .collect();
        match bound.as_slice() {
            [one] => Some((*one).clone()),
            many => many.iter().find(|n| **n == &job.name).map(|n| (*n).clone()),
        }
    });
    match binding {
        Some(b) => {
            let mut body = Yaml::map();
            body.entry("tasks")
                .entry(&b)
                .set("walltime", Yaml::str(&walltime));
            (
                format!("give task {b} walltime {walltime} ({why}), or make the command faster: apply the overlay fix-timeout"),
                Some(overlay("fix-timeout", body, format!("tasks.{b}.walltime"))),
            )
        }
        None => (
            format!("give job {} walltime: {walltime} ({why})", job.name),
            Some(workflow_edit(job, "walltime", Yaml::str(&walltime))),
        ),
    }
}

fn overlay(name: &str, body: Yaml, changes: String) -> Fix {
    let mut root = Yaml::map();
    root.entry("overlays").set(name, body.clone());
    Fix {
        name: name.into(),
        kind: "overlay".into(),
        yaml: root.to_text(),
        changes,
        validated: String::new(),
        overlay: Some(body),
    }
}

fn workflow_edit(job: &JobRow, key: &str, value: Yaml) -> Fix {
    let mut j = Yaml::map();
    j.set("name", Yaml::str(&job.name));
    j.set(key, value);
    let mut root = Yaml::map();
    root.set("jobs", Yaml::List(vec![j]));
    Fix {
        name: job.name.clone(),
        kind: "workflow".into(),
        yaml: root.to_text(),
        changes: format!("jobs[{}].{key}", job.name),
        validated: String::new(),
        overlay: None,
    }
}
