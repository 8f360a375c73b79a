//! `scalable report [RUN|last|--latest] [--format text|json|html] [--output
//! FILE]`: a run's telemetry as text, JSON or one self-contained HTML page.
//!
//! The broker sends the data a page at a time (the first page with the
//! run, jobs, agents, pilots, events and failures, every page a slice of
//! attempts); this command assembles them and renders through
//! `crate::report`. Must not: compute figures or lay out the report.

use std::path::PathBuf;

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{ReportPage, Request, RunRef};

use super::refs::parse_run;
use super::request::ask;
use super::Context;
use crate::cli_error::CliError;
use crate::client::Client;
use crate::output::print_out;
use crate::report::{self, Format, ReportChunk, ReportData, REPORT_FORMAT};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run: its id, or `last` for the newest (the default).
    pub run: Option<String>,
    /// The newest run (the same as `last`).
    #[arg(long, conflicts_with = "run")]
    pub latest: bool,
    /// text (the default; json under --json), json (every attempt a row) or html (one self-contained page).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub async fn exec(ctx: &Context<'_>, args: ReportArgs) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx.access).await?;
    let run = match (&args.run, args.latest) {
        (Some(r), false) => parse_run(r)?,
        _ => RunRef::Last,
    };
    let data = fetch(&client, run).await?;
    let format = args
        .format
        .unwrap_or(if ctx.json { Format::Json } else { Format::Text });
    let text = report::render(&data, format);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| {
                CliError::failed(format!(
                    "cannot write the report to {}: {e}",
                    path.display()
                ))
                .with_hint("check that the directory exists and is writable")
            })?;
            eprintln!("wrote {} ({} bytes)", path.display(), text.len());
        }
        None => print_out(&text),
    }
    Ok(ExitCode::Ok)
}

/// Every page of the run's report data, assembled.
pub(super) async fn fetch(client: &Client, run: RunRef) -> Result<ReportData, CliError> {
    let first = decode(
        ask(
            client,
            &Request::Report {
                run: run.clone(),
                after: None,
            },
        )
        .await?,
    )?;
    let (chunk, mut cursor) = first;
    let mut data = chunk
        .head
        .ok_or_else(|| CliError::failed("the broker's first report page has no head"))?;
    data.attempts = chunk.attempts;
    // Later pages name the run by id: `last` may move on meanwhile.
    let run = RunRef::Id(data.run.id);
    while let Some(after) = cursor {
        let (chunk, next) = decode(
            ask(
                client,
                &Request::Report {
                    run: run.clone(),
                    after: Some(after),
                },
            )
            .await?,
        )?;
        if next.is_some_and(|n| n <= after) {
            return Err(CliError::failed(format!(
                "the broker sent a report page that does not advance (from {after})"
            )));
        }
        data.absorb(chunk);
        cursor = next;
    }
    Ok(data)
}

fn decode(page: ReportPage) -> Result<(ReportChunk, Option<u64>), CliError> {
    if page.format != REPORT_FORMAT {
        return Err(CliError::failed(format!(
            "the broker sent report format {} where this cli reads {REPORT_FORMAT}",
            page.format
        ))
        .with_hint("use the scalable cli of the broker's release"));
    }
    let chunk = postcard::from_bytes(&page.body)
        .map_err(|e| CliError::failed(format!("the broker's report page is unreadable: {e}")))?;
    Ok((chunk, page.next))
}
