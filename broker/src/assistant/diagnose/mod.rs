//! `scalable diagnose`: every failed or lost attempt of a run classified
//! ([`classify`]), grouped into root causes that cite the attempts, what
//! they share and the measured numbers, with fixes proposed as overlays
//! ([`fix`]); [`text`] words it.
//!
//! Pure: the report data in, a [`Diagnosis`] out. Must not: fetch, validate
//! (the CLI validates every proposed overlay and drops what fails), or print.

pub mod classify;
pub mod fix;
#[cfg(test)]
mod tests;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::report::ReportData;
use classify::{classify, is_failure, Context, Finding};
pub use fix::Fix;
use scalable_common::manifest::Manifest;
use scalable_common::units::format_size;

/// A cause shared by one or more failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RootCause {
    pub class: String,
    pub job: String,
    pub attempts: Vec<u64>,
    pub tasks: Vec<String>,
    /// What the attempts have in common (`job downscale`, `tag demeter`,
    /// `host n1`, `exit code 3`).
    pub shared: Vec<String>,
    /// The measured numbers, as sentences.
    pub numbers: Vec<String>,
    pub evidence: String,
    pub recommendation: String,
    /// The fix as an overlay or workflow edit; validated by the CLI.
    pub fix: Option<Fix>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub run: u64,
    pub run_name: String,
    pub tasks: u64,
    pub failed_tasks: u64,
    pub attempts: usize,
    pub findings: Vec<Finding>,
    pub causes: Vec<RootCause>,
}

/// Diagnoses a run from its report data; `manifest` (the one the run was
/// submitted with, if the user names it) lets fixes name task bindings.
pub fn diagnose(data: &ReportData, manifest: Option<&Manifest>) -> Diagnosis {
    let findings: Vec<Finding> = data
        .attempts
        .iter()
        .filter(|a| is_failure(a))
        .map(|a| {
            let cx = Context {
                run: data.run.id,
                job: data.job(a.job_id),
                failure: data.failures.iter().find(|f| f.attempt_id == a.id),
                agent: data.agents.iter().find(|g| g.id == a.agent_id),
            };
            classify(a, &cx)
        })
        .collect();
    let mut groups: BTreeMap<(String, String), Vec<&Finding>> = BTreeMap::new();
    for f in &findings {
        groups
            .entry((f.class.clone(), f.job.clone()))
            .or_default()
            .push(f);
    }
    let mut causes: Vec<RootCause> = groups
        .into_iter()
        .map(|((class, job), fs)| cause(data, manifest, &class, &job, &fs))
        .collect();
    causes.extend(bad_hosts(data, &findings));
    // The cause with the most attempts first; ties by class and job (stable).
    causes.sort_by_key(|c| std::cmp::Reverse(c.attempts.len()));
    Diagnosis {
        run: data.run.id,
        run_name: data.run.name.clone(),
        tasks: data.run.tasks,
        failed_tasks: data.run.failed,
        attempts: data.attempts.len(),
        findings,
        causes,
    }
}

fn cause(
    data: &ReportData,
    manifest: Option<&Manifest>,
    class: &str,
    job: &str,
    fs: &[&Finding],
) -> RootCause {
    let attempts: Vec<u64> = fs.iter().map(|f| f.attempt).collect();
    let tasks: BTreeSet<String> = fs.iter().map(|f| f.task.clone()).collect();
    let mut shared = vec![format!("job {job}")];
    let same = |get: &dyn Fn(&Finding) -> Option<String>| -> Option<String> {
        let values: BTreeSet<Option<String>> = fs.iter().map(|f| get(f)).collect();
        match values.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(v)] => Some(v.clone()),
            _ => None,
        }
    };
    if let Some(t) = same(&|f| f.tag.clone()) {
        shared.push(format!("tag {t}"));
    }
    if fs.len() > 1 {
        if let Some(h) = same(&|f| Some(f.host.clone()).filter(|h| !h.is_empty())) {
            shared.push(format!("host {h}"));
        }
    }
    if let Some(c) = same(&|f| f.exit_code.map(|c| c.to_string())) {
        shared.push(format!("exit code {c}"));
    }
    let numbers = numbers(class, fs);
    let evidence = fs.first().map(|f| f.evidence.clone()).unwrap_or_default();
    let job_row = data.jobs.iter().find(|j| j.name == job);
    let (recommendation, fix) = fix::propose(class, job_row, data, manifest, fs);
    RootCause {
        class: class.to_string(),
        job: job.to_string(),
        attempts,
        tasks: tasks.into_iter().collect(),
        shared,
        numbers,
        evidence,
        recommendation,
        fix,
    }
}

fn numbers(class: &str, fs: &[&Finding]) -> Vec<String> {
    let mut out = Vec::new();
    match class {
        "MEMORY_EXHAUSTION" => {
            if let Some(p) = fs.iter().filter_map(|f| f.peak_rss_bytes).max() {
                out.push(format!("largest peak {}", format_size(p)));
            }
            if let Some(l) = fs.iter().filter_map(|f| f.memory_limit_bytes).max() {
                out.push(format!("limit {}", format_size(l)));
            }
        }
        "TIMEOUT" | "INVALID_INPUT" => {
            if let Some(r) = fs.iter().filter_map(|f| f.run_time_ms).max() {
                out.push(format!(
                    "longest run {}",
                    scalable_common::units::format_duration_ms(r)
                ));
            }
        }
        _ => {}
    }
    let codes: BTreeSet<i32> = fs.iter().filter_map(|f| f.exit_code).collect();
    if !codes.is_empty() && class != "MEMORY_EXHAUSTION" {
        let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
        out.push(format!("exit codes {}", codes.join(", ")));
    }
    out
}

/// A host where every attempt failed (at least two) while others succeeded
/// elsewhere: a cause of its own, beside the per-class ones.
fn bad_hosts(data: &ReportData, findings: &[Finding]) -> Vec<RootCause> {
    let host_of = |agent: u64| {
        data.agents
            .iter()
            .find(|g| g.id == agent)
            .map(|g| g.hostname.clone())
            .unwrap_or_default()
    };
    let mut ok: BTreeMap<String, usize> = BTreeMap::new();
    for a in &data.attempts {
        if a.end_class.as_deref() == Some("SUCCESS") {
            *ok.entry(host_of(a.agent_id)).or_default() += 1;
        }
    }
    let mut failed: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.class != "AGENT_LOST") {
        failed.entry(f.host.clone()).or_default().push(f);
    }
    let elsewhere_ok = |h: &str| ok.iter().any(|(k, n)| k != h && *n > 0);
    failed
        .into_iter()
        .filter(|(h, fs)| {
            !h.is_empty() && fs.len() >= 2 && !ok.contains_key(h) && elsewhere_ok(h)
        })
        .map(|(h, fs)| RootCause {
            class: "BAD_HOST".into(),
            job: String::new(),
            attempts: fs.iter().map(|f| f.attempt).collect(),
            tasks: fs
                .iter()
                .map(|f| f.task.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            shared: vec![format!("host {h}")],
            numbers: vec![format!("{} failed, 0 succeeded on {h}", fs.len())],
            evidence: format!("every attempt on {h} failed while attempts elsewhere succeeded"),
            recommendation: format!(
                "check {h} (disk, modules, mounts); until then keep its agents out (stop them, or give the target's tags: so they do not serve this work)"
            ),
            fix: None,
        })
        .collect()
}
