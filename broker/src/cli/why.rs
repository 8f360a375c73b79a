//! `scalable why TASK`: why a task is not running (or is where it is).
//!
//! Must not: reason about the task; the broker's core explains and this
//! command only prints its answer.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, WhyAnswer};

use super::refs::parse_task;
use super::request::request;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// The task: RUN/JOB/INDEX (e.g. last/downscale/0) or a task id.
    pub task: String,
}

pub async fn exec(ctx: &Context<'_>, args: WhyArgs) -> Result<ExitCode, CliError> {
    let w: WhyAnswer = request(ctx.access, || {
        let task = parse_task(&args.task)?;
        Ok(Request::Why { task })
    })
    .await?;
    print_out(&if ctx.json {
        output::json(&w)
    } else {
        crate::output::why_text(&w)
    });
    Ok(ExitCode::Ok)
}
