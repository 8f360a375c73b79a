//! `scalable init-component PATH --name N`: a component and task binding
//! (seed 000's shape) proposed from a project directory and, when a broker
//! is reachable and a task of that name ran, its measured telemetry. The
//! fragment validates when merged into a manifest before it is printed.
//!
//! Must not: read the project itself (`assistant::init_component` does).

use std::path::PathBuf;

use clap::Args;
use scalable_common::access;
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{AdviseRequest, Request};
use serde_json::json;

use super::assist::{
    answer_yaml, ask_model, emit, heuristic_invalid, validate_fragment, AiArgs, Stop,
};
use super::request::{request, AdviceJson};
use super::Context;
use crate::advisor::Advice;
use crate::assistant::init_component::{fragment, propose, scan};
use crate::cli_error::CliError;

#[derive(Args, Debug)]
pub struct InitComponentArgs {
    /// The project's directory (setup.py, pyproject.toml, requirements*.txt, Dockerfile*, README*).
    pub path: PathBuf,
    /// The component's name (also the tag its agents serve).
    #[arg(long)]
    pub name: String,
    /// Write the fragment to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub ai: AiArgs,
}

pub async fn exec(ctx: &Context<'_>, args: InitComponentArgs) -> Result<ExitCode, CliError> {
    let findings = scan(&args.path).map_err(|e| {
        CliError::bad_input(format!("init-component: {e}")).with_hint(
            "give the directory of the project (where its setup.py or pyproject.toml is)",
        )
    })?;
    let name = args.name.trim();
    if name.is_empty() {
        return Err(CliError::bad_input("init-component: --name is empty")
            .with_hint("--name NAME: the component's name, e.g. --name demeter"));
    }
    let history = telemetry(ctx, name).await;
    let p = propose(name, &findings, history.as_ref());
    let frag = fragment(&p);
    validate_fragment(&frag, name).map_err(|errs| {
        // A name the manifest refuses is the user's to change, not a bug.
        match errs
            .iter()
            .find(|e| e.contains(&format!("components.{name}")))
        {
            Some(e) => CliError::bad_input(format!("init-component: --name {name:?}: {e}")),
            None => heuristic_invalid("init-component", &errs),
        }
    })?;
    let heuristic = frag.to_text();
    let prompt_ctx = json!({
        "name": name,
        "findings": serde_json::to_string_pretty(&findings).unwrap_or_default(),
        "heuristic": heuristic,
    });
    let check = |a: &crate::assistant::llm::Answer| -> Result<String, Vec<String>> {
        let y = answer_yaml(a)?;
        let m = validate_fragment(&y, name)?;
        if !m.components.contains_key(name) {
            return Err(vec![format!("the fragment has no component {name}")]);
        }
        Ok(y.to_text())
    };
    let (yaml, source) = match ask_model(&args.ai, "init_component", prompt_ctx, &check) {
        Ok(Some(y)) => (y, "a model"),
        Ok(None) => (heuristic, "heuristics"),
        Err(Stop::Shown) => return Ok(ExitCode::Ok),
        Err(Stop::Error(e)) => return Err(e),
    };
    let out = if ctx.json {
        crate::output::json(
            &json!({"fragment": yaml, "proposal": p, "findings": findings, "source": source}),
        )
    } else {
        let mut s =
            format!("# Generated component definition ({source}); validated; review before use\n");
        for r in &p.reasons {
            s.push_str(&format!("# - {r}\n"));
        }
        s.push_str(&yaml);
        s
    };
    emit(&out, args.output.as_ref())?;
    Ok(ExitCode::Ok)
}

/// The advice from past runs of a task named `name`, when a broker's access
/// file is there and it has telemetry; `None` otherwise (quietly: the
/// directory alone is enough).
async fn telemetry(ctx: &Context<'_>, name: &str) -> Option<Advice> {
    access::find_access(ctx.access).ok()?;
    let asked = request(ctx.access, || {
        Ok(Request::Advise(AdviseRequest {
            task: name.to_string(),
            target: None,
            model_type: None,
            features: Vec::new(),
        }))
    });
    let AdviceJson(json) = tokio::time::timeout(std::time::Duration::from_secs(10), asked)
        .await
        .ok()?
        .ok()?;
    serde_json::from_str(&json).ok()
}
