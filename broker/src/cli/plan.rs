//! `scalable plan FILE --target T [--dry-run]`: workers per tag, resources per
//! worker and what they cost, for a target. Needs no broker.
//!
//! Must not: size or price anything; `pilots::plan` and `pilots::plan_costs`
//! do, and the output layer lays them out.

use clap::Args;
use scalable_common::exit::ExitCode;

use super::files::{broker_access, load_manifest_file, require_target, ManifestArgs};
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};
use crate::pilots;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub m: ManifestArgs,
    /// Print the plan only (the only mode until the scaler lands).
    #[arg(long)]
    pub dry_run: bool,
}

pub fn exec(ctx: &Context<'_>, args: PlanArgs) -> Result<ExitCode, CliError> {
    let target = require_target(&args.m)?;
    let manifest = load_manifest_file(&args.m)?;
    let rows = pilots::plan(&manifest, &target).map_err(CliError::bad_input)?;
    let provider = manifest
        .target(&target)
        .expect("plan checked it")
        .provider
        .name();
    let access = broker_access(ctx.access, ctx.json);
    let costs =
        pilots::plan_costs(&manifest, &target, &rows, &access).map_err(CliError::bad_input)?;
    print_out(&if ctx.json {
        output::plan_json(&rows, &costs)
    } else {
        output::plan_text(&target, provider, &rows, &costs)
    });
    Ok(ExitCode::Ok)
}
