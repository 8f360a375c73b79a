//! What the assistant commands share: `--no-ai` and `--show-prompt`, the
//! backend read from the environment, the LLM round with its fallback
//! notice, and the validation glue: every manifest an assistant prints goes
//! through `scalable validate`'s own code (`load_manifest`, then every
//! target rendered by `render::render_target`) first.
//!
//! Must not: hold an assistant's heuristics (`crate::assistant` does).

use std::path::PathBuf;

use clap::Args;
use scalable_common::manifest::{load_manifest, process_env, LoadOptions, Manifest};

use super::files::{broker_access, ManifestArgs};
use super::render::render_target;
use crate::assistant::backend::{Backend, Message};
use crate::assistant::llm::{self, Answer, Outcome};
use crate::assistant::prompt::{self, Secrets};
use crate::assistant::yaml::Yaml;
use crate::cli_error::CliError;

/// The name generated manifests carry in validation errors.
pub const GENERATED: &str = "generated.yaml";

// `--no-ai` and `--show-prompt` (a `//` comment: a doc comment would
// become the commands' `about`).
#[derive(Args, Debug, Clone, Default)]
pub struct AiArgs {
    /// Use the heuristics only, whatever SCALABLE_AI_BACKEND says.
    #[arg(long)]
    pub no_ai: bool,
    /// Print the prompt that would be sent to the model (secrets removed) and stop.
    #[arg(long)]
    pub show_prompt: bool,
}

/// The backend this command uses (`none` under `--no-ai`); an unknown
/// backend name is bad input.
pub fn backend(ai: &AiArgs) -> Result<Backend, CliError> {
    if ai.no_ai {
        return Ok(Backend::None);
    }
    Backend::from_env(&process_env).map_err(|e| {
        CliError::bad_input(e.to_string())
            .with_hint("unset SCALABLE_AI_BACKEND (heuristics), or set it to openai or ollama")
    })
}

/// What a command gets from the model, or `None`: use the heuristics (no
/// backend, or a failure, whose one-line notice is printed on stderr).
/// Under `--show-prompt` the prompt is printed and `Err(None)` says stop.
pub fn ask_model<T>(
    ai: &AiArgs,
    template: &str,
    ctx: serde_json::Value,
    check: &dyn Fn(&Answer) -> Result<T, Vec<String>>,
) -> Result<Option<T>, Stop> {
    let backend = backend(ai).map_err(Stop::Error)?;
    let secrets = Secrets::from_process();
    if backend == Backend::None && !ai.show_prompt {
        return Ok(None);
    }
    let messages: Vec<Message> =
        prompt::messages(template, &ctx, &secrets).map_err(|e| Stop::Error(CliError::failed(e)))?;
    if ai.show_prompt {
        crate::output::print_out(&prompt::show(
            &backend.endpoint(),
            backend.model(),
            &messages,
        ));
        return Err(Stop::Shown);
    }
    match llm::ask(&backend, messages, &secrets, check) {
        Outcome::Model(v) => Ok(Some(v)),
        Outcome::Fallback(notice) => {
            eprintln!("{notice}");
            Ok(None)
        }
    }
}

/// Why a command ends before printing its result.
pub enum Stop {
    /// `--show-prompt` printed the prompt.
    Shown,
    Error(CliError),
}

/// Validates manifest text as `scalable validate` would (every target
/// rendered too), with `overlays` applied; every problem, one per entry.
pub fn validate_text(text: &str, overlays: &[String]) -> Result<Manifest, Vec<String>> {
    let opts = LoadOptions {
        target: None,
        overlays,
        env: &process_env,
    };
    let manifest = load_manifest(GENERATED, text, &opts).map_err(|errs| {
        errs.to_string()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    })?;
    let access = broker_access(None, true);
    let args = ManifestArgs {
        file: PathBuf::from(GENERATED),
        target: None,
        overlays: overlays.to_vec(),
    };
    let mut errors = Vec::new();
    for target in manifest.targets.keys() {
        if let Err(e) = render_target(&args, &manifest, target, None, &access) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(manifest)
    } else {
        Err(errors)
    }
}

/// A component/task fragment validates when merged into a minimal manifest
/// (one local target).
pub fn validate_fragment(fragment: &Yaml, project: &str) -> Result<Manifest, Vec<String>> {
    let mut root = minimal(project);
    for key in ["components", "tasks"] {
        if let Some(v) = fragment.get(key) {
            root.set(key, v.clone());
        }
    }
    for (k, _) in fragment.entries() {
        if k != "components" && k != "tasks" {
            return Err(vec![format!(
                "{k}: a component fragment has only components: and tasks:"
            )]);
        }
    }
    validate_text(&root.to_text(), &[])
}

/// `version: 1`, a project and one local target.
pub fn minimal(project: &str) -> Yaml {
    let mut root = Yaml::map();
    root.set("version", Yaml::Int(1));
    let name: String = project
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    root.entry("project").set(
        "name",
        Yaml::str(if name.is_empty() { "project" } else { &name }),
    );
    root.entry("targets")
        .entry("local")
        .set("provider", Yaml::str("local"));
    root
}

/// The model's YAML parsed, or the reason it is not YAML.
pub fn answer_yaml(a: &Answer) -> Result<Yaml, Vec<String>> {
    if a.yaml.trim().is_empty() {
        return Err(vec!["\"yaml\" is empty".into()]);
    }
    Yaml::parse(strip_fences(&a.yaml)).map_err(|e| vec![format!("\"yaml\" is not YAML: {e}")])
}

fn strip_fences(s: &str) -> &str {
    let t = s.trim();
    let t = t
        .strip_prefix("```yaml")
        .or_else(|| t.strip_prefix("```"))
        .unwrap_or(t);
    t.strip_suffix("```").unwrap_or(t).trim()
}

/// Writes `text` to `--output FILE` (saying so on stderr) or prints it.
pub fn emit(text: &str, output: Option<&PathBuf>) -> Result<(), CliError> {
    match output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| {
                CliError::failed(format!("cannot write {}: {e}", path.display()))
                    .with_hint("check that the directory exists and is writable")
            })?;
            eprintln!("wrote {}", path.display());
        }
        None => crate::output::print_out(text.trim_end()),
    }
    Ok(())
}

/// The error a heuristic's own invalid output is: a bug, said as one.
pub fn heuristic_invalid(what: &str, errors: &[String]) -> CliError {
    CliError::failed(format!(
        "the {what} heuristic produced a manifest that does not validate: {} (this is a bug in scalable, please report it)",
        errors.first().cloned().unwrap_or_default()
    ))
}
