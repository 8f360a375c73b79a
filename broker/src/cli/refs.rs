//! How a user names runs and tasks on the command line: `last` or a run id;
//! `RUN/JOB/INDEX` (the index counts from 0), `RUN/JOB@ITEM` (the item a
//! `range` or `foreach` gave the task: `3/sim@1` is the first task of
//! `range: 1..=10`), `RUN/JOB` (index 0) or a task id.
//!
//! Must not: ask the broker whether the run or task exists; the broker answers
//! that (exit 2 from its refusal).

use scalable_common::protocol::{RunRef, TaskRef};

use crate::cli_error::CliError;

/// `last` or a run id.
pub fn parse_run(s: &str) -> Result<RunRef, CliError> {
    if s == "last" {
        return Ok(RunRef::Last);
    }
    s.parse::<u64>().map(RunRef::Id).map_err(|_| {
        CliError::bad_input(format!("{s:?} is not a run (expected a run id or `last`)"))
            .with_hint("scalable status lists the runs")
    })
}

/// `RUN/JOB/INDEX`, `RUN/JOB@ITEM`, `RUN/JOB` or a task id.
pub fn parse_task(s: &str) -> Result<TaskRef, CliError> {
    let bad = || {
        CliError::bad_input(format!(
            "{s:?} is not a task (expected RUN/JOB/INDEX with the index from 0, e.g. 3/downscale/0, RUN/JOB@ITEM, e.g. 3/downscale@ssp1, or a task id)"
        ))
    };
    // An item may hold `/` (a foreach path); a job name never holds `@`.
    if let Some((run, rest)) = s.split_once('/') {
        if let Some((job, item)) = rest.split_once('@') {
            if job.is_empty() || job.contains('/') || item.is_empty() {
                return Err(bad());
            }
            return Ok(TaskRef::Item {
                run: parse_run(run).map_err(|_| bad())?,
                job: job.to_string(),
                item: item.to_string(),
            });
        }
    }
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [id] => id.parse::<u64>().map(TaskRef::Id).map_err(|_| bad()),
        [run, job, index] => Ok(TaskRef::Path {
            run: parse_run(run).map_err(|_| bad())?,
            job: job.to_string(),
            index: index.parse().map_err(|_| bad())?,
        }),
        [run, job] => Ok(TaskRef::Path {
            run: parse_run(run).map_err(|_| bad())?,
            job: job.to_string(),
            index: 0,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalable_common::exit::ExitCode;

    #[test]
    fn runs_are_ids_or_last() {
        assert_eq!(parse_run("last").unwrap(), RunRef::Last);
        assert_eq!(parse_run("12").unwrap(), RunRef::Id(12));
        let e = parse_run("x").unwrap_err();
        assert_eq!(e.code, ExitCode::BadInput);
        assert_eq!(
            e.to_string(),
            "error: \"x\" is not a run (expected a run id or `last`) (hint: scalable status lists the runs)"
        );
    }

    #[test]
    fn tasks_are_paths_or_ids() {
        assert_eq!(parse_task("7").unwrap(), TaskRef::Id(7));
        assert_eq!(
            parse_task("last/sim/3").unwrap(),
            TaskRef::Path {
                run: RunRef::Last,
                job: "sim".into(),
                index: 3
            }
        );
        assert_eq!(
            parse_task("2/sim").unwrap(),
            TaskRef::Path {
                run: RunRef::Id(2),
                job: "sim".into(),
                index: 0
            }
        );
        assert_eq!(
            parse_task("last/sim@4").unwrap(),
            TaskRef::Item {
                run: RunRef::Last,
                job: "sim".into(),
                item: "4".into()
            }
        );
        assert_eq!(
            parse_task("3/stage@data/a.csv").unwrap(),
            TaskRef::Item {
                run: RunRef::Id(3),
                job: "stage".into(),
                item: "data/a.csv".into()
            }
        );
        for bad in [
            "x", "x/sim/0", "1/sim/x", "1/a/2/3", "1/sim@", "1/@4", "1/a/b@4", "x/sim@4",
        ] {
            let e = parse_task(bad).unwrap_err();
            assert_eq!(e.code, ExitCode::BadInput, "{bad}");
            assert!(e.message.contains("is not a task"), "{bad}: {e}");
        }
    }
}
