//! The semantic checks of a workflow (SPEC §4): names, limits, templates and
//! `after` references, for a `WorkflowDef` from a file or from the network.
//!
//! This module must not read YAML nor know about lines: it returns issues by
//! key path and `spans` places them. Cycles are found by `cycles`.

use std::collections::HashMap;

use super::cycles::cycles;
use super::def::{Items, JobDef, WorkflowDef};
use super::per_item::match_items;
use super::spans::{Issue, Spans};
use super::{
    CHECKPOINT_PATHS_MAX, CPUS_MAX, JOB_NAME_CHARS_MAX, NAME_CHARS_MAX, RETRIES_MAX,
    TASKS_PER_RUN_MAX,
};
use crate::suggest::did_you_mean;
use crate::template::check_job_templates;

/// All semantic checks; `bad_items[i]` skips rendering job i's templates.
pub(super) fn check(def: &WorkflowDef, spans: &Spans, bad_items: &[bool]) -> Vec<Issue> {
    let mut issues = Vec::new();
    if def.name.trim().is_empty() {
        issues.push(Issue::new("workflow", "workflow name is empty"));
    } else if def.jobs.iter().all(|j| j.name != def.name) {
        // A name shared with a job (a quick submit's) is reported once, as the
        // job's: the rules are the same.
        if let Some(issue) = check_identifier("workflow", "workflow", &def.name) {
            issues.push(issue);
        }
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
        if let Some(issue) = check_name(job, &p, &by_name, spans) {
            issues.push(issue);
        }
        by_name.entry(job.name.as_str()).or_insert(i);
        let render = !bad_items.get(i).copied().unwrap_or(false);
        check_job(job, &p, render, &mut issues);
    }
    check_total(def, &mut issues);
    check_after(def, &by_name, &mut issues);
    issues
}

fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const NAME_HINT: &str = "use letters, digits, \"_\", \".\" and \"-\"";

/// A name shown by `status` and friends (the workflow's, a tag) that is not
/// empty: at most [`NAME_CHARS_MAX`] identifier characters, so no newline or
/// terminal escape can forge a line of output.
fn check_identifier(path: &str, what: &str, name: &str) -> Option<Issue> {
    if name.chars().count() > NAME_CHARS_MAX {
        Some(Issue::new(
            path,
            format!("{what} name is longer than {NAME_CHARS_MAX} characters"),
        ))
    } else if !valid_job_name(name) {
        Some(
            Issue::new(path, format!("invalid {what} name {name:?}"))
                .hint(Some(NAME_HINT.to_string())),
        )
    } else {
        None
    }
}

/// A job's name: present, short, an identifier, and the first of its kind.
fn check_name(
    job: &JobDef,
    p: &str,
    by_name: &HashMap<&str, usize>,
    spans: &Spans,
) -> Option<Issue> {
    let np = format!("{p}.name");
    if job.name.is_empty() {
        Some(Issue::new(np, "job name is empty"))
    } else if job.name.chars().count() > JOB_NAME_CHARS_MAX {
        Some(Issue::new(
            np,
            format!("job name is longer than {JOB_NAME_CHARS_MAX} characters"),
        ))
    } else if !valid_job_name(&job.name) {
        Some(
            Issue::new(np, format!("invalid job name {:?}", job.name))
                .hint(Some(NAME_HINT.to_string())),
        )
    } else if let Some(&first) = by_name.get(job.name.as_str()) {
        let first_path = format!("jobs[{first}].name");
        let at = match spans.find(&first_path) {
            Some((line, _)) => format!("line {line}"),
            None => format!("jobs[{first}]"),
        };
        Some(
            Issue::new(np, format!("duplicate job name {:?}", job.name))
                .hint(Some(format!("first defined at {at}"))),
        )
    } else {
        None
    }
}

fn items_path(job: &JobDef, p: &str) -> String {
    match job.items {
        Items::Range { .. } => format!("{p}.range"),
        _ => format!("{p}.foreach"),
    }
}

/// One job on its own: command, items, limits, environment and templates
/// (rendered only when `render` and the job is within the task limit).
fn check_job(job: &JobDef, p: &str, render: bool, issues: &mut Vec<Issue>) {
    check_checkpoint(job, p, issues);
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
            items_path(job, p),
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
    if let Some(tag) = &job.tag {
        if let Some(issue) = check_identifier(&format!("{p}.tag"), "tag", tag) {
            issues.push(issue);
        }
    }
    let render = render && count <= TASKS_PER_RUN_MAX;
    for t in check_job_templates(job, render) {
        issues.push(Issue::new(format!("{p}.{}", t.field), t.message).hint(t.hint));
    }
}

/// The run as a whole within the task limit (a job over it on its own is
/// already reported).
fn check_total(def: &WorkflowDef, issues: &mut Vec<Issue>) {
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
}

/// `after`: references (whole-job names, then per-item entries, numbered
/// after the names), matching item sets, then cycles over the edges that
/// resolved.
fn check_after(def: &WorkflowDef, by_name: &HashMap<&str, usize>, issues: &mut Vec<Issue>) {
    let names: Vec<&str> = def.jobs.iter().map(|j| j.name.as_str()).collect();
    let named: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); def.jobs.len()];
    for (i, job) in def.jobs.iter().enumerate() {
        let entries = job.after.iter().chain(job.after_per.iter().map(|p| &p.job));
        for (k, name) in entries.enumerate() {
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
                Some(&j) if k >= job.after.len() && deps[i].contains(&j) => {
                    issues.push(
                        Issue::new(ap, format!("job {name:?} is named twice in after"))
                            .hint(Some("keep one entry per upstream job".to_string())),
                    );
                }
                Some(&j) => {
                    if k >= job.after.len() {
                        check_items(def, i, j, k, issues);
                    }
                    if !deps[i].contains(&j) {
                        deps[i].push(j);
                    }
                }
            }
        }
    }
    for cycle in cycles(&deps) {
        let (first, second) = (cycle[0], cycle[1]);
        let job = &def.jobs[first];
        let k = job
            .after
            .iter()
            .chain(job.after_per.iter().map(|p| &p.job))
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
}

/// Job `i`'s per-item entry `k` (numbered after its names) against job `j`.
fn check_items(def: &WorkflowDef, i: usize, j: usize, k: usize, issues: &mut Vec<Issue>) {
    let (down, up) = (&def.jobs[i], &def.jobs[j]);
    let per = down.after_per[k - down.after.len()].per;
    if let Err(m) = match_items(&up.name, &up.items, &down.name, &down.items, per) {
        issues.push(Issue::new(format!("jobs[{i}].after[{k}]"), m.message).hint(Some(m.hint)));
    }
}

/// `checkpoint:` paths: relative, inside the task's directory, literal, a
/// bounded number; and a task directory of its own for each task, since the
/// paths are not templated (two tasks must never share a checkpoint).
fn check_checkpoint(job: &JobDef, p: &str, issues: &mut Vec<Issue>) {
    if job.checkpoint.is_empty() {
        return;
    }
    let cp = format!("{p}.checkpoint");
    if job.checkpoint.len() > CHECKPOINT_PATHS_MAX {
        issues.push(Issue::new(
            cp.clone(),
            format!(
                "{} checkpoint paths, more than the limit of {CHECKPOINT_PATHS_MAX}",
                job.checkpoint.len()
            ),
        ));
    }
    for (k, path) in job.checkpoint.iter().enumerate() {
        let bad = if path.trim().is_empty() {
            Some("checkpoint path is empty")
        } else if path.starts_with('/') {
            Some("checkpoint path must be relative to the task's directory")
        } else if path.split('/').any(|c| c == "..") {
            Some("checkpoint path must stay inside the task's directory (no \"..\")")
        } else if path.contains("{{") || path.contains("{%") {
            Some("checkpoint paths are not templated")
        } else {
            None
        };
        if let Some(bad) = bad {
            issues.push(Issue::new(format!("{cp}[{k}]"), bad).hint(Some(
                "name files or a directory under the task's directory, e.g. ckpt/".to_string(),
            )));
        }
    }
    let own_dirs = job.workdir.as_deref().is_some_and(|w| w.contains("{{"));
    if job.items.count_saturating() > 1 && !own_dirs {
        issues.push(
            Issue::new(
                cp,
                format!(
                    "every task of job {:?} would share these checkpoint paths",
                    job.name
                ),
            )
            .hint(Some(
                "give each task its own directory, e.g. workdir: \"run-{{ item }}\"".to_string(),
            )),
        );
    }
}
