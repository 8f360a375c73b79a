//! Raw YAML shapes to the public types, recording where each value was
//! written. Problems that need the raw form (both of `foreach`/`range`, bad
//! sizes, durations and ranges) become issues here.
//!
//! This module must not check meaning that a `WorkflowDef` from the network
//! could also get wrong (names, references, limits, templates): `check` does
//! that for both.

use serde_saphyr::Spanned;

use super::def::{Items, JobDef, Per, PerAfter, ResourceRequest, WorkflowDef};
use super::range::parse_range;
use super::raw::{After, AfterEntry, Pairs, RawJob, RawResources, RawWorkflow};
use super::spans::{Issue, Spans};
use crate::units::{parse_duration_ms, parse_size_bytes};

/// Raw YAML to the public types; problems go to `issues`. Returns, per job,
/// whether its items are broken (so templates are not rendered against a
/// placeholder).
pub(super) fn convert(
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
    if let Some(first) = raw.checkpoint.first() {
        // The list has no span of its own: a problem with it points at its first path.
        spans.add(&format!("{p}.checkpoint"), first);
    }
    let checkpoint = spanned_list(&format!("{p}.checkpoint"), raw.checkpoint, spans);
    let (items, bad_items) = convert_items(p, raw.foreach, raw.range, spans, issues);
    let resources = match raw.resources {
        Some(r) => convert_resources(&format!("{p}.resources"), r, spans, issues),
        None => ResourceRequest::default(),
    };
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
    let (after, after_per) = convert_after(&format!("{p}.after"), raw.after, spans, issues);
    let job = JobDef {
        name: raw.name.value,
        command,
        items,
        after,
        after_per,
        checkpoint,
        tag: raw.tag,
        task: raw.task,
        resources,
        retries: spanned_value(&format!("{p}.retries"), raw.retries, spans).unwrap_or(0),
        walltime_ms,
        priority: raw.priority.unwrap_or(0),
        inputs,
        outputs,
        env: spanned_pairs(&format!("{p}.env"), raw.env, spans),
        workdir: spanned_value(&format!("{p}.workdir"), raw.workdir, spans),
        features: spanned_pairs(&format!("{p}.features"), raw.features, spans),
        max_running: spanned_value(&format!("{p}.max_running"), raw.max_running, spans),
        max_fails: raw.max_fails,
        cache: raw.cache.unwrap_or(false),
    };
    (job, bad_items)
}

type RawForeach = Spanned<Vec<Spanned<super::raw::RawItem>>>;

/// `foreach` or `range` as one `Items`; `true` when they are broken.
fn convert_items(
    p: &str,
    foreach: Option<RawForeach>,
    range: Option<Spanned<String>>,
    spans: &mut Spans,
    issues: &mut Vec<Issue>,
) -> (Items, bool) {
    match (foreach, range) {
        (Some(_), Some(range)) => {
            spans.add(&format!("{p}.range"), &range);
            issues.push(
                Issue::new(format!("{p}.range"), "foreach and range are exclusive")
                    .hint(Some("keep one of them".to_string())),
            );
            (Items::One, true)
        }
        (Some(list), None) => {
            let fp = format!("{p}.foreach");
            spans.add(&fp, &list);
            let mut items = Vec::with_capacity(list.value.len());
            for (k, item) in list.value.into_iter().enumerate() {
                spans.add(&format!("{fp}[{k}]"), &item);
                items.push(item.value.0);
            }
            (Items::List(items), false)
        }
        (None, Some(range)) => {
            let rp = format!("{p}.range");
            spans.add(&rp, &range);
            match parse_range(&range.value) {
                Ok((start, end)) => (Items::Range { start, end }, false),
                Err(e) => {
                    issues.push(Issue::new(rp, e));
                    (Items::One, true)
                }
            }
        }
        (None, None) => (Items::One, false),
    }
}

fn convert_resources(
    rp: &str,
    r: Spanned<RawResources>,
    spans: &mut Spans,
    issues: &mut Vec<Issue>,
) -> ResourceRequest {
    spans.add(rp, &r);
    let r = r.value;
    let mut resources = ResourceRequest {
        cpus: spanned_value(&format!("{rp}.cpus"), r.cpus, spans),
        ..ResourceRequest::default()
    };
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
    resources
}

/// `after` split into whole-job names and per-item entries. Places are kept
/// under the paths `check` reports: names as `after[K]` by their position
/// among the names, per-item entries after them (`after[names + K]`), so a
/// file that mixes both in another order gets the right line under a
/// renumbered path.
fn convert_after(
    ap: &str,
    after: Option<Spanned<After>>,
    spans: &mut Spans,
    issues: &mut Vec<Issue>,
) -> (Vec<String>, Vec<PerAfter>) {
    let Some(after) = after else {
        return (Vec::new(), Vec::new());
    };
    spans.add(ap, &after);
    let entries = match after.value {
        After::One(name) => {
            // A single name has no element span of its own.
            spans.add_location(&format!("{ap}[0]"), &after.referenced);
            return (vec![name], Vec::new());
        }
        After::Many(entries) => entries,
    };
    let names = entries
        .iter()
        .filter(|e| matches!(e.value, AfterEntry::Job(_)))
        .count();
    let (mut jobs, mut per_items) = (Vec::new(), Vec::new());
    for e in entries {
        match e.value {
            AfterEntry::Job(name) => {
                spans.add_location(&format!("{ap}[{}]", jobs.len()), &e.referenced);
                jobs.push(name);
            }
            AfterEntry::Per { job, per } => {
                let path = format!("{ap}[{}]", names + per_items.len());
                spans.add_location(&path, &e.referenced);
                let per = match per.as_str() {
                    "item" => Per::Item,
                    "index" => Per::Index,
                    other => {
                        issues.push(
                            Issue::new(format!("{path}.per"), format!("unknown per {other:?}"))
                                .hint(Some("write per: item or per: index".to_string())),
                        );
                        Per::Item
                    }
                };
                per_items.push(PerAfter { job, per });
            }
        }
    }
    (jobs, per_items)
}

fn spanned_value<T>(path: &str, value: Option<Spanned<T>>, spans: &mut Spans) -> Option<T> {
    value.map(|v| {
        spans.add(path, &v);
        v.value
    })
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
