//! `scalable analyze RUN`: a pegasus-analyzer-like report of a run's
//! failures; exit 1 when a task failed, so scripts can branch on it.
//!
//! Must not: find the failures itself; the broker's store does.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, RunAnalysis};

use super::refs::parse_run;
use super::request::request_pages;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The run: its id, or `last` for the newest.
    pub run: String,
}

pub async fn exec(ctx: &Context<'_>, args: AnalyzeArgs) -> Result<ExitCode, CliError> {
    let a: RunAnalysis = request_pages(ctx.access, |after| {
        let run = parse_run(&args.run)?;
        Ok(Request::Analyze { run, after })
    })
    .await?;
    print_out(&if ctx.json {
        output::json(&a)
    } else {
        output::analyze_text(&a)
    });
    Ok(if a.failed > 0 {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    })
}
