//! `scalable pilots`: every pilot the broker submitted, with its provider id,
//! state and queue wait.
//!
//! Must not: ask a provider; the broker's fleet records are the answer.

use scalable_common::exit::ExitCode;
use scalable_common::protocol::{PilotInfo, Request};

use super::request::request;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

pub async fn exec(ctx: &Context<'_>) -> Result<ExitCode, CliError> {
    let list: Vec<PilotInfo> = request(ctx.access, || Ok(Request::Pilots)).await?;
    print_out(&if ctx.json {
        output::json(&list)
    } else {
        output::pilots_text(&list)
    });
    Ok(ExitCode::Ok)
}
