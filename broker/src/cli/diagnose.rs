//! `scalable diagnose --run RUN [--format text|json] [--manifest M]`: every
//! failed or lost attempt of a run classified, grouped into root causes with
//! evidence, and fixes proposed as overlays; each fix is validated (against
//! `--manifest`, or a minimal manifest) and dropped if it does not.
//!
//! Must not: classify (`assistant::diagnose` does) or load the run itself
//! (the report's pages carry the evidence).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use scalable_common::exit::ExitCode;
use scalable_common::input_file::read_input_file;
use scalable_common::manifest::{Manifest, MANIFEST_TEXT_BYTES_MAX};
use scalable_common::workflow;
use serde_json::json;

use super::assist::{answer_yaml, ask_model, minimal, validate_text, AiArgs, Stop};
use super::files::{load_manifest_file, ManifestArgs};
use super::refs::parse_run;
use super::Context;
use crate::assistant::diagnose::{self, text, Diagnosis, Fix};
use crate::assistant::yaml::Yaml;
use crate::cli_error::CliError;
use crate::client::Client;
use crate::report::ReportData;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    /// The run: its id, or `last` for the newest.
    #[arg(long)]
    pub run: String,
    /// text (the default; json under --json) or json (every attempt's class, the causes, the fixes).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The manifest the run was submitted with: fixes name its components and task bindings and are validated against it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub ai: AiArgs,
}

/// The longest analysis a model may add.
const MODEL_TEXT_BYTES_MAX: usize = 8 << 10;

pub async fn exec(ctx: &Context<'_>, args: DiagnoseArgs) -> Result<ExitCode, CliError> {
    let run = parse_run(&args.run)?;
    let manifest = match &args.manifest {
        Some(f) => Some(load(f)?),
        None => None,
    };
    let client = Client::connect(ctx.access).await?;
    let data: ReportData = super::report::fetch(&client, run).await?;
    let mut d = diagnose::diagnose(&data, manifest.as_ref().map(|(m, _)| m));
    for cause in &mut d.causes {
        if let Some(fix) = cause.fix.take() {
            match validate_fix(fix, &data, manifest.as_ref()) {
                Ok(fix) => cause.fix = Some(fix),
                Err(e) => cause
                    .recommendation
                    .push_str(&format!(" (the proposed fix did not validate: {e})")),
            }
        }
    }
    let model = model_analysis(&args.ai, &d, &data, manifest.as_ref())?;
    let Some(model) = model else {
        return Ok(ExitCode::Ok);
    };
    let json_out = ctx.json || args.format == Some(Format::Json);
    crate::output::print_out(&if json_out {
        crate::output::json(
            &json!({"diagnosis": d, "model": model.map(|(t, y)| json!({"text": t, "overlay": y}))}),
        )
    } else {
        let mut s = text::render(&d);
        if let Some((t, y)) = model {
            s.push_str(&format!("\nModel's analysis:\n─────────────────\n{t}\n"));
            if let Some(y) = y {
                s.push_str(&format!("\nModel's fix (validated):\n{y}"));
            }
        }
        s.trim_end().to_string()
    });
    Ok(ExitCode::Ok)
}

/// The model's words and validated overlay, `Some(None)` without a model,
/// `None` after `--show-prompt`.
#[allow(clippy::type_complexity)]
fn model_analysis(
    ai: &AiArgs,
    d: &Diagnosis,
    data: &ReportData,
    manifest: Option<&(Manifest, Yaml)>,
) -> Result<Option<Option<(String, Option<String>)>>, CliError> {
    let evidence: Vec<_> = d.findings.iter().take(50).collect();
    let prompt_ctx = json!({
        "run": d.run,
        "failed": d.findings.len(),
        "attempts": d.attempts,
        "evidence": serde_json::to_string_pretty(&evidence).unwrap_or_default(),
        "heuristic": text::render(d),
    });
    let check =
        |a: &crate::assistant::llm::Answer| -> Result<(String, Option<String>), Vec<String>> {
            let t = a.text.trim();
            if t.is_empty() || t.len() > MODEL_TEXT_BYTES_MAX {
                return Err(vec![format!(
                    "\"text\" must be 1 to {MODEL_TEXT_BYTES_MAX} bytes"
                )]);
            }
            if a.yaml.trim().is_empty() {
                return Ok((t.to_string(), None));
            }
            let y = answer_yaml(a)?;
            let overlays = y.get("overlays").map(Yaml::entries).unwrap_or(&[]);
            let [(name, body)] = overlays else {
                return Err(vec![
                    "\"yaml\" must be one overlay: overlays: {NAME: ...}".into()
                ]);
            };
            let fix = Fix {
                name: name.clone(),
                kind: "overlay".into(),
                yaml: y.to_text(),
                changes: String::new(),
                validated: String::new(),
                overlay: Some(body.clone()),
            };
            let fix = validate_fix(fix, data, manifest).map_err(|e| vec![e])?;
            Ok((t.to_string(), Some(fix.yaml)))
        };
    match ask_model(ai, "diagnose", prompt_ctx, &check) {
        Ok(m) => Ok(Some(m)),
        Err(Stop::Shown) => Ok(None),
        Err(Stop::Error(e)) => Err(e),
    }
}

fn load(file: &std::path::Path) -> Result<(Manifest, Yaml), CliError> {
    let m = load_manifest_file(&ManifestArgs {
        file: file.to_path_buf(),
        target: None,
        overlays: Vec::new(),
    })?;
    let shown = file.display().to_string();
    let text = read_input_file(file, MANIFEST_TEXT_BYTES_MAX)
        .map_err(|e| CliError::bad_input(format!("cannot read {shown}: {e}")))?;
    let raw = Yaml::parse(&text).map_err(|e| CliError::bad_input(format!("{shown}: {e}")))?;
    Ok((m, raw))
}

/// The fix checked: an overlay merged into the manifest (or a minimal one
/// holding the run's components) and loaded with `--overlay NAME`; a
/// workflow edit parsed as a workflow job.
fn validate_fix(
    mut fix: Fix,
    data: &ReportData,
    manifest: Option<&(Manifest, Yaml)>,
) -> Result<Fix, String> {
    let first = |e: Vec<String>| e.into_iter().next().unwrap_or_default();
    let Some(body) = fix.overlay.clone() else {
        let mut jobs = Yaml::parse(&fix.yaml).map_err(|e| e.to_string())?;
        if let Some(Yaml::List(js)) = jobs.get_mut("jobs") {
            for j in js.iter_mut() {
                j.set("command", Yaml::strs(&["true"]));
            }
        }
        jobs.set("workflow", Yaml::str("check"));
        workflow::parse_workflow("fix.yaml", &jobs.to_text()).map_err(|e| e.to_string())?;
        fix.validated = "validated as a workflow job".into();
        return Ok(fix);
    };
    let (mut root, against) = match manifest {
        Some((_, raw)) => (raw.clone(), "validated against --manifest".to_string()),
        None => (
            minimal_for(data),
            "validated against a minimal manifest (pass --manifest M to check yours)".to_string(),
        ),
    };
    root.entry("overlays").set(&fix.name, body);
    validate_text(&root.to_text(), std::slice::from_ref(&fix.name)).map_err(first)?;
    fix.validated = format!("{against} with --overlay {}", fix.name);
    Ok(fix)
}

/// A manifest holding one component per tag the run's jobs used, sized as
/// they asked, and a task binding per job: what an overlay on them needs.
fn minimal_for(data: &ReportData) -> Yaml {
    let mut root = minimal(&data.run.name);
    for j in &data.jobs {
        let Some(tag) = &j.tag else { continue };
        let c = root.entry("components").entry(tag);
        c.set("cpus", Yaml::Int(i64::from(j.cpus.max(1))));
        if j.memory_bytes > 0 {
            c.set(
                "memory",
                Yaml::str(format!("{}M", j.memory_bytes.div_ceil(1 << 20))),
            );
        }
        let t = root.entry("tasks").entry(&j.name);
        t.set("component", Yaml::str(tag));
    }
    root
}
