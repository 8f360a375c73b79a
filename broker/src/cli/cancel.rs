//! `scalable cancel TARGET`: cancel a run (`RUN`) or one task (`RUN/JOB/INDEX`
//! or a task id).
//!
//! Must not: decide what a cancel reaches (dependents, running attempts); the
//! broker's core does and answers with the count.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::Request;

use super::refs::{parse_run, parse_task};
use super::request::{request, Cancelled};
use super::Context;
use crate::cli_error::CliError;
use crate::output::print_out;

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// A run (its id, or `last`), or one task: RUN/JOB/INDEX or a task id.
    pub target: String,
}

pub async fn exec(ctx: &Context<'_>, args: CancelArgs) -> Result<ExitCode, CliError> {
    let Cancelled { tasks } = request(ctx.access, || cancel_request(&args.target)).await?;
    print_out(&if ctx.json {
        format!("{{\"cancelled\": {tasks}}}\n")
    } else {
        format!("cancelled {tasks} task(s)\n")
    });
    Ok(ExitCode::Ok)
}

/// A task when the target has a `/`, otherwise a run.
fn cancel_request(target: &str) -> Result<Request, CliError> {
    Ok(if target.contains('/') {
        Request::Cancel {
            run: None,
            task: Some(parse_task(target)?),
        }
    } else {
        Request::Cancel {
            run: Some(parse_run(target)?),
            task: None,
        }
    })
}
