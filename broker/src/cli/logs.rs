//! `scalable logs TASK [--attempt N] [--stderr]`: the stdout (or stderr) the
//! broker kept for a task's attempt, written as it came.
//!
//! Must not: change the bytes; a note about what was cut, and how a failed
//! attempt ended, goes to stderr.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, TaskLogs};

use super::refs::parse_task;
use super::request::request_pages;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_bytes, print_out};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The task: RUN/JOB/INDEX (e.g. last/downscale/0) or a task id.
    pub task: String,
    /// Which attempt, by its number as `analyze` shows it (default: the latest).
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Print the task's stderr instead of its stdout.
    #[arg(long)]
    pub stderr: bool,
}

pub async fn exec(ctx: &Context<'_>, args: LogsArgs) -> Result<ExitCode, CliError> {
    let logs: TaskLogs = request_pages(ctx.access, |from| {
        let task = parse_task(&args.task)?;
        Ok(Request::Logs {
            task,
            attempt: args.attempt,
            from: from.unwrap_or(0),
        })
    })
    .await?;
    if ctx.json {
        print_out(&output::json(&logs));
    } else {
        print_bytes(output::logs_bytes(&logs, args.stderr));
        if let Some(note) = output::logs_truncated_note(&logs, args.stderr) {
            eprintln!("{note}");
        }
        if let Some(note) = output::logs_ending_note(&logs) {
            eprintln!("{note}");
        }
    }
    Ok(ExitCode::Ok)
}
