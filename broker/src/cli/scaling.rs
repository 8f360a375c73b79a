//! `scalable scaling [RUN|--since D]`: the AdaptiveScaler's stored
//! decisions, with their reasoning and outcome, of one run's lifetime, of
//! the last D, or all.
//!
//! Must not: read the store or decide anything; the broker answers.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Page, Request};
use scalable_common::scaling::ScalingDecisionInfo;
use scalable_common::units::parse_duration_ms;

use super::refs::parse_run;
use super::request::request_pages;
use super::{now_ms, Context};
use crate::cli_error::CliError;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct ScalingArgs {
    /// Decisions made while this run was live (its id, or `last`).
    #[arg(conflicts_with = "since")]
    pub run: Option<String>,
    /// Decisions of the last D (e.g. 30m, 2h, 1d).
    #[arg(long, value_name = "D")]
    pub since: Option<String>,
}

pub async fn exec(ctx: &Context<'_>, args: ScalingArgs) -> Result<ExitCode, CliError> {
    let now = now_ms();
    let page: Page<ScalingDecisionInfo> = request_pages(ctx.access, |after| {
        let run = args.run.as_deref().map(parse_run).transpose()?;
        let since_ms = match args.since.as_deref() {
            Some(d) => Some(now.saturating_sub(
                parse_duration_ms(d).map_err(|e| CliError::bad_input(format!("--since: {e}")))?,
            )),
            None => None,
        };
        Ok(Request::Scaling {
            run,
            since_ms,
            after,
        })
    })
    .await?;
    print_out(&if ctx.json {
        output::json(&page.items)
    } else {
        output::scaling_text(&page.items)
    });
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    #[test]
    fn a_run_or_a_time_span_but_not_both() {
        let cli = Cli::try_parse_from(["scalable", "scaling", "--since", "30m", "--json"]).unwrap();
        match cli.command {
            Command::Scaling(a) => assert_eq!((a.run, a.since.as_deref()), (None, Some("30m"))),
            other => panic!("parsed as {other:?}"),
        }
        assert!(cli.json);
        let cli = Cli::try_parse_from(["scalable", "scaling", "last"]).unwrap();
        assert!(matches!(cli.command, Command::Scaling(a) if a.run.as_deref() == Some("last")));
        let e = Cli::try_parse_from(["scalable", "scaling", "last", "--since", "1h"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
    }
}
