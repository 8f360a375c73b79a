//! `scalable stats RUN`: a pegasus-statistics-like summary of a run.
//!
//! Must not: compute statistics; the broker's store does.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, RunStats};

use super::refs::parse_run;
use super::request::request;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The run: its id, or `last` for the newest.
    pub run: String,
}

pub async fn exec(ctx: &Context<'_>, args: StatsArgs) -> Result<ExitCode, CliError> {
    let s: RunStats = request(ctx.access, || {
        let run = parse_run(&args.run)?;
        Ok(Request::Stats { run })
    })
    .await?;
    print_out(&if ctx.json {
        output::json(&s)
    } else {
        output::stats_text(&s)
    });
    Ok(ExitCode::Ok)
}
