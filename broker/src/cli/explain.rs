//! `scalable explain MANIFEST --target T`: the plan of a target in
//! sentences (provider, bounds, resources, image, storage, cost, decisions)
//! from the manifest, the planner and the price table. Needs no broker.
//!
//! Must not: word the plan (`assistant::explain` does) or price it
//! (`pilots::plan_costs` does).

use clap::Args;
use scalable_common::exit::ExitCode;
use serde_json::json;

use super::assist::{ask_model, AiArgs, Stop};
use super::files::{broker_access, load_manifest_file, require_target, ManifestArgs};
use super::Context;
use crate::assistant::explain;
use crate::cli_error::CliError;
use crate::output::print_out;
use crate::pilots;

/// The longest explanation a model may give.
const MODEL_TEXT_BYTES_MAX: usize = 8 << 10;

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub m: ManifestArgs,
    #[command(flatten)]
    pub ai: AiArgs,
}

pub fn exec(ctx: &Context<'_>, args: ExplainArgs) -> Result<ExitCode, CliError> {
    let target = require_target(&args.m)?;
    let manifest = load_manifest_file(&args.m)?;
    let rows = pilots::plan(&manifest, &target).map_err(CliError::bad_input)?;
    let access = broker_access(ctx.access, true);
    let costs =
        pilots::plan_costs(&manifest, &target, &rows, &access).map_err(CliError::bad_input)?;
    let e = explain::explain(&manifest, &target, &rows, &costs);
    let heuristic = explain::text(&e);
    let prompt_ctx = json!({
        "target": target,
        "plan": serde_json::to_string_pretty(&json!({"rows": rows, "costs": costs, "explanation": e})).unwrap_or_default(),
        "heuristic": heuristic,
    });
    let check = |a: &crate::assistant::llm::Answer| -> Result<String, Vec<String>> {
        let t = a.text.trim();
        if t.is_empty() {
            return Err(vec!["\"text\" is empty".into()]);
        }
        if t.len() > MODEL_TEXT_BYTES_MAX {
            return Err(vec![format!(
                "\"text\" is over {MODEL_TEXT_BYTES_MAX} bytes"
            )]);
        }
        Ok(t.to_string())
    };
    let model = match ask_model(&args.ai, "explain", prompt_ctx, &check) {
        Ok(m) => m,
        Err(Stop::Shown) => return Ok(ExitCode::Ok),
        Err(Stop::Error(err)) => return Err(err),
    };
    print_out(&match (ctx.json, model) {
        (true, m) => crate::output::json(&json!({"explanation": e, "model_text": m})),
        // The figures stay the planner's: the model's words, then its cost line.
        (false, Some(m)) => format!("{m}\n\n{}", e.cost),
        (false, None) => heuristic.trim_end().to_string(),
    });
    Ok(ExitCode::Ok)
}
