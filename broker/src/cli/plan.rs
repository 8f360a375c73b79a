//! `scalable plan FILE --target T [--objective O] [--policy P] [--workflow W]
//! [--format text|json]`: workers per tag, resources per worker and what
//! they cost, for a target. Needs no broker; with `--objective` or
//! `--policy`, sized for the objective from the work (`--workflow`) and the
//! broker's measured history when its state dir is here (read-only).
//!
//! Must not: size or price anything; `pilots::plan`, `pilots::plan_costs`
//! and `objective::plan` do, and the output layer lays them out.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use scalable_common::access as access_file;
use scalable_common::exit::ExitCode;

use super::files::{
    broker_access, load_manifest_file, load_workflow, require_target, ManifestArgs,
};
use super::Context;
use crate::cli_error::CliError;
use crate::objective::{self, History, Objective, PlanInput, Policy};
use crate::output::{self, print_out};
use crate::pilots;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub m: ManifestArgs,
    /// Print the plan only (plan never starts anything).
    #[arg(long)]
    pub dry_run: bool,
    /// What to size for: "minimize cost", "minimize time" or balance
    /// (default with --policy: balance).
    #[arg(long, value_name = "OBJECTIVE")]
    pub objective: Option<String>,
    /// safe (20% headroom), aggressive (as computed) or manual (the
    /// manifest's counts) (default with --objective: safe).
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// The workflow whose work to size for (default: one wave of each
    /// group's maximum).
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,
    /// text, or json (also --json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn exec(ctx: &Context<'_>, args: PlanArgs) -> Result<ExitCode, CliError> {
    let target = require_target(&args.m)?;
    let objective = args
        .objective
        .as_deref()
        .map(Objective::parse)
        .transpose()
        .map_err(CliError::bad_input)?;
    let policy = args
        .policy
        .as_deref()
        .map(Policy::parse)
        .transpose()
        .map_err(CliError::bad_input)?;
    let manifest = load_manifest_file(&args.m)?;
    let rows = pilots::plan(&manifest, &target).map_err(CliError::bad_input)?;
    let t = manifest.target(&target).expect("plan checked it");
    let provider = t.provider.name();
    let json = ctx.json || args.format == Format::Json;
    let access = broker_access(ctx.access, json);
    let costs =
        pilots::plan_costs(&manifest, &target, &rows, &access).map_err(CliError::bad_input)?;
    if objective.is_none() && policy.is_none() {
        print_out(&if json {
            output::plan_json(&rows, &costs)
        } else {
            output::plan_text(&target, provider, &rows, &costs)
        });
        return Ok(ExitCode::Ok);
    }
    let workflow = args.workflow.as_deref().map(load_workflow).transpose()?;
    let history = history(ctx.access, &target);
    let work = objective::work_per_tag(
        &manifest,
        &rows,
        workflow.as_ref().map(|(w, _)| w),
        history.as_ref(),
    );
    let input = PlanInput {
        target: &target,
        provider,
        rows: &rows,
        costs: &costs,
        work: &work,
        history: history.as_ref(),
        workflow: workflow.as_ref().map(|(_, shown)| shown.as_str()),
        adaptive: t.adaptive.is_some(),
    };
    let plan = objective::plan(
        &input,
        objective.unwrap_or(Objective::Balance),
        policy.unwrap_or(Policy::Safe),
    );
    print_out(&if json {
        output::json(&plan)
    } else {
        output::objective_plan_text(&plan)
    });
    Ok(ExitCode::Ok)
}

/// The measured run times and queue waits of `target` in the store of the
/// broker whose access file is found (read-only); `None` without one, or
/// with nothing measured yet.
fn history(explicit: Option<&Path>, target: &str) -> Option<History> {
    let access = access_file::find_access(explicit).ok()?;
    let db = access.with_file_name("broker.db");
    if !db.is_file() {
        return None;
    }
    let c = crate::advisor::history::open(&db).ok()?;
    let (run_seconds, queue_wait_seconds) = crate::store::measured_medians(&c, target).ok()?;
    (!run_seconds.is_empty() || queue_wait_seconds.is_some()).then_some(History {
        run_seconds,
        queue_wait_seconds,
    })
}
