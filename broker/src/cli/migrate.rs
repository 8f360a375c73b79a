//! `scalable migrate MANIFEST --from P --to Q`: the manifest with its
//! provider-P targets moved to provider Q (options mapped, a note for each
//! without an equivalent, overlays kept), validated before it is printed.
//!
//! Must not: map options itself (`assistant::migrate` does).

use std::path::PathBuf;

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::input_file::read_input_file;
use scalable_common::manifest::MANIFEST_TEXT_BYTES_MAX;
use serde_json::json;

use super::assist::{answer_yaml, ask_model, emit, validate_text, AiArgs, Stop};
use super::files::{load_manifest_file, ManifestArgs};
use super::Context;
use crate::assistant::migrate::{migrate, PROVIDERS};
use crate::assistant::yaml::Yaml;
use crate::cli_error::CliError;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The manifest (scalable.yaml).
    pub file: PathBuf,
    /// The provider (or target name) to migrate from: local, slurm, aws, gcp, kubernetes.
    #[arg(long)]
    pub from: String,
    /// The provider to migrate to.
    #[arg(long)]
    pub to: String,
    /// Write the migrated manifest to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub ai: AiArgs,
}

/// A provider's name from what a user may type (`k8s`, `hpc`, `fargate`).
pub fn provider_name(s: &str) -> Option<&'static str> {
    let lower = s.trim().to_ascii_lowercase();
    let alias = match lower.as_str() {
        "k8s" | "kube" => "kubernetes",
        "hpc" => "slurm",
        "fargate" | "ec2" | "amazon" => "aws",
        "google" | "gce" => "gcp",
        other => other,
    };
    PROVIDERS.iter().copied().find(|p| *p == alias)
}

fn unknown_provider(flag: &str, s: &str) -> CliError {
    CliError::bad_input(format!("migrate: {flag} {s:?} is not a provider"))
        .with_hint(format!("providers are: {}", PROVIDERS.join(", ")))
}

pub fn exec(ctx: &Context<'_>, args: MigrateArgs) -> Result<ExitCode, CliError> {
    let to = provider_name(&args.to).ok_or_else(|| unknown_provider("--to", &args.to))?;
    let manifest_args = ManifestArgs {
        file: args.file.clone(),
        target: None,
        overlays: Vec::new(),
    };
    // The input must validate first: migrating a broken manifest hides its errors.
    let loaded = load_manifest_file(&manifest_args)?;
    let from = match provider_name(&args.from) {
        Some(p) => p.to_string(),
        None if loaded.targets.contains_key(&args.from) => args.from.clone(),
        None => return Err(unknown_provider("--from", &args.from)),
    };
    let shown = args.file.display().to_string();
    let text = read_input_file(&args.file, MANIFEST_TEXT_BYTES_MAX)
        .map_err(|e| CliError::bad_input(format!("cannot read {shown}: {e}")))?;
    let raw = Yaml::parse(&text).map_err(|e| CliError::bad_input(format!("{shown}: {e}")))?;
    let m = migrate(&raw, &from, to).map_err(|e| {
        CliError::bad_input(format!("{shown}: {e}"))
            .with_hint("--from names a provider of one of the manifest's targets, or a target")
    })?;
    let heuristic = m.manifest.to_text();
    validate_text(&heuristic, &[]).map_err(|e| {
        CliError::failed(format!(
            "the migrated manifest does not validate: {} (the notes list what to fix by hand: {})",
            e.first().cloned().unwrap_or_default(),
            m.notes.join("; ")
        ))
    })?;
    let prompt_ctx = json!({
        "from": from, "to": to,
        "from_provider": from,
        "manifest": without_env_values(&raw).to_text(),
        "heuristic": heuristic,
    });
    let check = |a: &crate::assistant::llm::Answer| -> Result<(String, String), Vec<String>> {
        let text = answer_yaml(a)?.to_text();
        let got = validate_text(&text, &[])?;
        if !got.targets.values().any(|t| t.provider.name() == to) {
            return Err(vec![format!("the manifest has no {to} target")]);
        }
        Ok((text, a.text.trim().to_string()))
    };
    let (yaml, notes, source) = match ask_model(&args.ai, "migrate", prompt_ctx, &check) {
        Ok(Some((y, n))) => (y, vec![n], "a model"),
        Ok(None) => (heuristic, m.notes.clone(), "heuristics"),
        Err(Stop::Shown) => return Ok(ExitCode::Ok),
        Err(Stop::Error(e)) => return Err(e),
    };
    let out = if ctx.json {
        crate::output::json(
            &json!({"manifest": yaml, "notes": notes, "renamed": m.renamed, "source": source}),
        )
    } else {
        let mut s = format!("# Migration: {from} → {to} ({source}); validated; review before use\n{yaml}\n# Migration notes:\n");
        for n in &notes {
            for (i, line) in n.lines().enumerate() {
                s.push_str(if i == 0 { "# - " } else { "#   " });
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    };
    emit(&out, args.output.as_ref())?;
    Ok(ExitCode::Ok)
}

/// The raw manifest with every component's `env:` values blanked: a prompt
/// carries their names only.
fn without_env_values(raw: &Yaml) -> Yaml {
    let mut out = raw.clone();
    if let Some(Yaml::Map(comps)) = out.get_mut("components") {
        for (_, c) in comps.iter_mut() {
            if let Some(Yaml::Map(env)) = c.get_mut("env") {
                for (_, v) in env.iter_mut() {
                    *v = Yaml::str("[value withheld]");
                }
            }
        }
    }
    out
}
