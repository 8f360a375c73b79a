//! `scalable resume RUN [--wait]`: run again what did not succeed in a
//! finished run (rescue); successes stay.
//!
//! Must not: pick the tasks to run again; the broker does.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Request, RunRef};

use super::refs::parse_run;
use super::request::{ask, Resumed};
use super::wait::wait_for;
use super::Context;
use crate::cli_error::CliError;
use crate::client::Client;
use crate::output::print_out;

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run: an id or `last`.
    pub run: String,
    /// Wait for the resumed run to finish (exit 0 iff all succeeded).
    #[arg(long)]
    pub wait: bool,
}

pub async fn exec(ctx: &Context<'_>, args: ResumeArgs) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx.access).await?;
    let run = parse_run(&args.run)?;
    let Resumed { run, tasks } = ask(&client, &Request::Resume { run }).await?;
    print_out(&if ctx.json {
        format!("{{\"run\": {run}, \"resumed\": {tasks}}}\n")
    } else {
        format!("run {run}: {tasks} task(s) run again\n")
    });
    if args.wait {
        return wait_for(&client, RunRef::Id(run), ctx.json).await;
    }
    Ok(ExitCode::Ok)
}
