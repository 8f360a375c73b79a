//! A task as the CLI names it (`RUN/JOB/INDEX`, `RUN/JOB@ITEM`, a task id)
//! resolved against the live core, and the one line a user reads when the
//! name fits no task: the job's size, its first and last index and item, and
//! the other form of the name when that is what the user likely meant.
//!
//! Read-only: asks the core, changes nothing, sends nothing.

use scalable_common::protocol::{RunId, RunRef, TaskId, TaskRef};
use scalable_common::workflow::Items;

use crate::core::Core;

/// The task `t` names, or why it names none.
pub(super) fn resolve(core: &Core, t: &TaskRef) -> Result<TaskId, String> {
    match t {
        TaskRef::Id(id) => core
            .locate_task(*id)
            .map(|_| *id)
            .ok_or_else(|| format!("no task {id}")),
        TaskRef::Path { run, job, index } => {
            let run = resolve_run(core, run)?;
            let (first, def) = core.job_def(run, job).ok_or_else(|| no_job(run, job))?;
            let count = def.items.count();
            if *index < count {
                return Ok(first + index);
            }
            Err(format!(
                "job {job} of run {run} has {}: no index {index} (indices count from 0){}",
                span(&def.items),
                item_hint(run, job, &def.items, &index.to_string())
            ))
        }
        TaskRef::Item { run, job, item } => {
            let run = resolve_run(core, run)?;
            let (first, def) = core.job_def(run, job).ok_or_else(|| no_job(run, job))?;
            match def.items.index_of(item) {
                Some(i) => Ok(first + i),
                None if def.items == Items::One => Err(format!(
                    "job {job} of run {run} has no items (one task): name it {run}/{job}/0"
                )),
                None => Err(format!(
                    "job {job} of run {run} has no item {item:?}; it has {}",
                    span(&def.items)
                )),
            }
        }
    }
}

fn resolve_run(core: &Core, run: &RunRef) -> Result<RunId, String> {
    let id = match run {
        RunRef::Id(id) => *id,
        RunRef::Last => core
            .last_run()
            .ok_or("no runs yet (submit one with scalable submit)")?,
    };
    if core.has_run(id) {
        Ok(id)
    } else {
        Err(format!("no run {id} (scalable status lists the runs)"))
    }
}

fn no_job(run: RunId, job: &str) -> String {
    format!("run {run} has no job {job:?} (scalable status {run} lists its jobs)")
}

/// `5 tasks: index 0 is item 1, index 4 is item 5`.
fn span(items: &Items) -> String {
    let n = items.count();
    let tasks = if n == 1 {
        "1 task".to_string()
    } else {
        format!("{n} tasks")
    };
    match (items.get(0), n.checked_sub(1).and_then(|l| items.get(l))) {
        (Some(first), Some(last)) if n > 1 => format!(
            "{tasks}: index 0 is item {first}, index {} is item {last}",
            n - 1
        ),
        (Some(first), _) => format!("{tasks}: index 0 is item {first}"),
        _ => format!("{tasks}: index 0"),
    }
}

/// When the number given as an index is one of the job's items, the user
/// likely meant the item: say how to name it.
fn item_hint(run: RunId, job: &str, items: &Items, given: &str) -> String {
    match items.index_of(given) {
        Some(_) => format!(" (hint: {run}/{job}@{given} names the task of item {given})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_names_first_and_last_index_with_their_items() {
        assert_eq!(
            span(&Items::Range { start: 1, end: 5 }),
            "5 tasks: index 0 is item 1, index 4 is item 5"
        );
        assert_eq!(span(&Items::One), "1 task: index 0");
        assert_eq!(
            item_hint(3, "sim", &Items::Range { start: 1, end: 5 }, "5"),
            " (hint: 3/sim@5 names the task of item 5)"
        );
        assert_eq!(
            item_hint(3, "sim", &Items::Range { start: 1, end: 5 }, "9"),
            ""
        );
    }
}
