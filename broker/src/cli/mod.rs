//! `scalable`, the user's CLI: the clap definition of every command and the
//! dispatcher. Each command lives in its own module with its arguments and
//! one `exec` function (cargo's shape): it parses what the user typed, asks
//! the broker through [`request`] (or reads a manifest), and prints through
//! [`crate::output`] in text or JSON.
//!
//! Layout: `refs` (run and task names), `files` (workflow and manifest
//! loading, the access file for `render`/`plan`), [`request`] (the one typed
//! request helper), then one module per command.
//!
//! Must not: format responses (the output layer does), hold decisions the
//! broker or the library modules make, or use a bare integer as an exit code
//! (every path ends in [`ExitCode`]).

mod advise;
mod agents;
mod analyze;
mod assist;
mod cancel;
mod compose;
mod diagnose;
mod explain;
mod export;
mod files;
mod init_component;
mod logs;
mod migrate;
mod mistakes;
mod pilots;
mod plan;
mod refs;
mod render;
mod report;
pub mod request;
mod resume;
mod scale;
mod scaling;
mod stats;
mod status;
mod submit;
mod validate;
mod wait;
mod why;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use scalable_common::exit::ExitCode;

use crate::cli_error::CliError;

pub use advise::{AdviseArgs, TuneArgs};
pub use analyze::AnalyzeArgs;
pub use assist::AiArgs;
pub use cancel::CancelArgs;
pub use compose::ComposeArgs;
pub use diagnose::DiagnoseArgs;
pub use explain::ExplainArgs;
pub use export::ExportArgs;
pub use files::ManifestArgs;
pub use init_component::InitComponentArgs;
pub use logs::LogsArgs;
pub use migrate::MigrateArgs;
pub use plan::PlanArgs;
pub use refs::{parse_run, parse_task};
pub use render::RenderArgs;
pub use report::ReportArgs;
pub use resume::ResumeArgs;
pub use scale::ScaleArgs;
pub use scaling::ScalingArgs;
pub use stats::StatsArgs;
pub use status::StatusArgs;
pub use submit::SubmitArgs;
pub use wait::WaitArgs;
pub use why::WhyArgs;

#[derive(Parser, Debug)]
#[command(
    name = "scalable",
    version,
    about = "Submit and watch many-task workflows on a Scalable broker"
)]
pub struct Cli {
    /// The broker's access file (default: $SCALABLE_ACCESS, then ./.scalable/access.json).
    #[arg(long, global = true, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variant would buy nothing.
// The variants' doc comments are the commands' `about`; the argument structs
// carry none, because clap would let theirs replace it.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submit a workflow file, or a command with `-- CMD ARGS...` (quick submit).
    Submit(SubmitArgs),
    /// Task counts per job of one run, or of every run.
    Status(StatusArgs),
    /// Wait for a run to finish; exit 0 iff every task succeeded (or was cached).
    Wait(WaitArgs),
    /// Cancel a run (RUN) or one task (RUN/JOB/INDEX or a task id).
    Cancel(CancelArgs),
    /// Re-run what did not succeed in a finished run (rescue); successes stay.
    Resume(ResumeArgs),
    /// Print the stdout (or stderr) kept for a task's attempt.
    Logs(LogsArgs),
    /// The agents connected now.
    Agents,
    /// Add or remove pilots of the broker's target: +N, -N or =N. Removal
    /// cancels pilots still queued first, then drains idle agents; busy ones
    /// only with --force.
    Scale(ScaleArgs),
    /// Every pilot the broker submitted: provider id, state, queue wait.
    Pilots,
    /// The adaptive scaler's decisions: what it added and removed, and why.
    Scaling(ScalingArgs),
    /// pegasus-statistics-like summary of a run.
    Stats(StatsArgs),
    /// pegasus-analyzer-like report of a run's failures.
    Analyze(AnalyzeArgs),
    /// A run's telemetry: workers, summary, per-job breakdown, failures; text, JSON or one HTML page.
    Report(ReportArgs),
    /// A run's telemetry as JSON lines (attempts, tasks, agents, pilots, usage).
    Export(ExportArgs),
    /// Why a task is not running: missing tag, too large, dependency, throttle...
    Why(WhyArgs),
    /// Check a manifest: `ok`, or every error as FILE:LINE:COL: path: message.
    Validate(ManifestArgs),
    /// Print exactly what would be submitted to start a target's agents.
    Render(RenderArgs),
    /// Workers per tag and resources per worker for a target.
    Plan(PlanArgs),
    /// What a task type should ask for, learned from measured usage.
    Advise(AdviseArgs),
    /// Search a learned advisor's parameters by cross-validation; stores the best.
    Tune(TuneArgs),
    /// Classify a run's failed and lost attempts, group them into root causes, propose validated fixes.
    Diagnose(DiagnoseArgs),
    /// A target's plan in sentences: provider, workers, resources, image, storage, cost, decisions.
    Explain(ExplainArgs),
    /// A manifest (with a workflow skeleton) from a description in words; validated before it is printed.
    Compose(ComposeArgs),
    /// Move a manifest's targets from one provider to another, with a note for each option without an equivalent.
    Migrate(MigrateArgs),
    /// Propose a component and task binding from a project directory (and past telemetry).
    InitComponent(InitComponentArgs),
}

/// What every command gets besides its own arguments: the global flags.
pub struct Context<'a> {
    /// `--access FILE`, if given.
    pub access: Option<&'a Path>,
    /// `--json`: print data as JSON.
    pub json: bool,
}

/// Parses the command line and runs it: the whole `scalable` binary. A
/// mistaken command or option is one line whose hint names the right one
/// ([`mistakes`]); under `--json` every error is `{"error": ..., "hint": ...}`
/// on stderr, with the exit code it has in text.
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let argv: Vec<OsString> = args.into_iter().collect();
    match Cli::try_parse_from(&argv) {
        Ok(cli) => main_with(cli),
        Err(e) => {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            parse_failed(&e, &argv)
        }
    }
}

/// What a command line clap refused prints: help and version as clap shows
/// them; a known mistake as our one line; any other usage error as clap
/// words it (with its usage), or as JSON under `--json`.
fn parse_failed(e: &clap::Error, argv: &[String]) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::Ok;
    }
    let json = argv
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    match (mistakes::from_clap(e, argv), json) {
        (Some(err), _) => report(err, json),
        (None, true) => report(clap_error(e), true),
        (None, false) => {
            let _ = e.print();
            ExitCode::BadInput
        }
    }
}

/// clap's error as a `CliError`: its message (the first paragraph, on one
/// line), and its tips, or else its usage line, as the hint.
fn clap_error(e: &clap::Error) -> CliError {
    let text = e.render().to_string();
    let (message, rest) = text.split_once("\n\n").unwrap_or((&text, ""));
    let message: Vec<&str> = message.lines().map(str::trim).collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let tips: Vec<&str> = rest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .collect();
    let usage = rest.lines().find_map(|l| l.strip_prefix("Usage: "));
    let hint = match (tips.is_empty(), usage) {
        (false, _) => tips.join("; "),
        (true, Some(u)) => format!("usage: {u}"),
        (true, None) => "scalable --help shows the commands and their options".into(),
    };
    CliError::bad_input(message).with_hint(hint)
}

/// Runs a parsed command line and returns the exit code. Every error is one
/// line on stderr (one JSON object under `--json`).
pub fn main_with(cli: Cli) -> ExitCode {
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                CliError::failed(format!("cannot start the async runtime: {e}")),
                json,
            )
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => report(e, json),
    }
}

/// Prints an error, one line (one JSON object under `--json`), and returns
/// its exit code.
fn report(e: CliError, json: bool) -> ExitCode {
    if json {
        eprintln!("{}", e.json());
    } else {
        eprintln!("{e}");
    }
    e.code
}

/// The dispatcher: one line per command.
async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let ctx = Context {
        access: cli.access.as_deref(),
        json: cli.json,
    };
    match cli.command {
        Command::Submit(args) => submit::exec(&ctx, args).await,
        Command::Status(args) => status::exec(&ctx, args).await,
        Command::Wait(args) => wait::exec(&ctx, args).await,
        Command::Cancel(args) => cancel::exec(&ctx, args).await,
        Command::Resume(args) => resume::exec(&ctx, args).await,
        Command::Logs(args) => logs::exec(&ctx, args).await,
        Command::Agents => agents::exec(&ctx).await,
        Command::Scale(args) => scale::exec(&ctx, args).await,
        Command::Pilots => pilots::exec(&ctx).await,
        Command::Scaling(args) => scaling::exec(&ctx, args).await,
        Command::Stats(args) => stats::exec(&ctx, args).await,
        Command::Analyze(args) => analyze::exec(&ctx, args).await,
        Command::Report(args) => report::exec(&ctx, args).await,
        Command::Export(args) => export::exec(&ctx, args).await,
        Command::Why(args) => why::exec(&ctx, args).await,
        Command::Validate(args) => validate::exec(&ctx, args),
        Command::Render(args) => render::exec(&ctx, args),
        Command::Plan(args) => plan::exec(&ctx, args),
        Command::Advise(args) => advise::exec(&ctx, args).await,
        Command::Tune(args) => advise::exec_tune(&ctx, args).await,
        Command::Diagnose(args) => diagnose::exec(&ctx, args).await,
        Command::Explain(args) => explain::exec(&ctx, args),
        Command::Compose(args) => compose::exec(&ctx, args),
        Command::Migrate(args) => migrate::exec(&ctx, args),
        Command::InitComponent(args) => init_component::exec(&ctx, args).await,
    }
}

/// Unix milliseconds now: the CLI reads the clock, the output layer does not.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every argument of `cmd` and its subcommands that has no help text, as
/// `scalable submit --tag`; clap's own `--help` and `--version` aside. Used
/// by the tests of each binary (every option has help text, issue 13).
pub fn args_without_help(cmd: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    walk_help(cmd, cmd.get_name(), &mut missing);
    missing
}

fn walk_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    if cmd.get_about().is_none() {
        missing.push(format!("{path} (the command)"));
    }
    for arg in cmd.get_arguments() {
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = arg
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            missing.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands() {
        walk_help(sub, &format!("{path} {}", sub.get_name()), missing);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_option_has_help_text() {
        let missing = super::args_without_help(&super::Cli::command());
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
