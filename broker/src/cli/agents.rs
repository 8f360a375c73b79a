//! `scalable agents`: the agents connected now (and those away).
//!
//! Must not: judge an agent's health; the broker's view is printed as is.

use scalable_common::exit::ExitCode;
use scalable_common::protocol::{AgentInfo, Request};

use super::request::request;
use super::{now_ms, Context};
use crate::cli_error::CliError;
use crate::output::{self, print_out};

pub async fn exec(ctx: &Context<'_>) -> Result<ExitCode, CliError> {
    let agents: Vec<AgentInfo> = request(ctx.access, || Ok(Request::Agents)).await?;
    print_out(&if ctx.json {
        output::json(&agents)
    } else {
        output::agents_text(&agents, now_ms())
    });
    Ok(ExitCode::Ok)
}
