//! `scalable status [RUN]`: task counts per job of one run, or of every run.
//!
//! Must not: count anything itself; the broker's counts are printed as they
//! come.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Page, Request, RunStatus};

use super::refs::parse_run;
use super::request::request_pages;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One run (its id, or `last`); every run when omitted.
    pub run: Option<String>,
}

pub async fn exec(ctx: &Context<'_>, args: StatusArgs) -> Result<ExitCode, CliError> {
    let page: Page<RunStatus> = request_pages(ctx.access, |after| {
        let run = args.run.as_deref().map(parse_run).transpose()?;
        Ok(Request::Status { run, after })
    })
    .await?;
    let runs = page.items;
    print_out(&if ctx.json {
        output::json(&runs)
    } else if runs.is_empty() {
        "no runs yet\n".into()
    } else {
        output::status_text(&runs)
    });
    Ok(ExitCode::Ok)
}
