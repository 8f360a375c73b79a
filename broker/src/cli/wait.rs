//! `scalable wait RUN`: poll a run until it is done, showing progress (and
//! what blocks the run, when something does) on stderr; exit 0 iff every
//! task succeeded (or was cached). `submit --wait`
//! and `resume --wait` end here too.
//!
//! Must not: decide whether a run is done; the broker's run state says so.

use std::time::Duration;

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Page, Request, RunRef, RunStatus};

use super::refs::parse_run;
use super::request::{ask, unexpected};
use super::{now_ms, Context};
use crate::cli_error::CliError;
use crate::client::Client;
use crate::output::{self, print_out, Progress};

/// How often `wait` asks the broker for progress.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The run: its id, or `last` for the newest.
    pub run: String,
}

pub async fn exec(ctx: &Context<'_>, args: WaitArgs) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx.access).await?;
    let run = parse_run(&args.run)?;
    wait_for(&client, run, ctx.json).await
}

/// Polls `run` on an open connection until it is no longer running.
pub async fn wait_for(client: &Client, run: RunRef, json: bool) -> Result<ExitCode, CliError> {
    let mut progress: Option<Progress> = None;
    loop {
        let req = Request::Status {
            run: Some(run.clone()),
            after: None,
        };
        let mut page: Page<RunStatus> = ask(client, &req).await?;
        let Some(status) = page.items.pop() else {
            return Err(unexpected("no run", "the run's Status"));
        };
        let p = progress.get_or_insert_with(|| Progress::new(status.run, status.counts.total()));
        p.update(&status.counts, &status.blocked, now_ms());
        if status.state != "running" {
            p.finish(&status.counts);
            return Ok(finish(&status, json));
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// Prints how the run ended and turns it into the exit code.
fn finish(status: &RunStatus, json: bool) -> ExitCode {
    if json {
        print_out(&output::json(status));
    } else {
        eprintln!("{}", output::finished_line(status));
    }
    if status.state == "succeeded" {
        ExitCode::Ok
    } else {
        if !json {
            eprintln!("{}", output::failed_hint(status.run));
        }
        ExitCode::Failed
    }
}
