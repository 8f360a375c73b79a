//! `scalable render FILE --target T [--tag G] [--commands]`: exactly what
//! would be submitted to start a target's agents (the files), or the command
//! lines the provider would run; `--json` gives either as one JSON object.
//! Needs no broker; reads its access file when there is one.
//!
//! [`render_target`] is also what `validate FILE --target T` runs, so a
//! manifest that validates renders: one code path, the provider's checks
//! included (a Fargate target without `subnet` fails both).
//!
//! Must not: render or build command lines itself; `crate::render` and the
//! providers do, this only joins their output.

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::manifest::Manifest;
use serde::Serialize;

use super::files::{broker_access, load_manifest_file, require_target, ManifestArgs};
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};
use crate::pilots::BrokerAccess;
use crate::providers;
use crate::render::{self, PilotSpec};

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub m: ManifestArgs,
    /// Only the pilots serving this tag (component).
    #[arg(long)]
    pub tag: Option<String>,
    /// Print the exact command lines the provider would run to start
    /// them (sbatch, aws, gcloud, kubectl), not the files.
    #[arg(long)]
    pub commands: bool,
}

/// Everything a target's pilots are: each rendered file and each command
/// line the provider would run (dry run), per tag.
#[derive(Debug, Serialize)]
pub struct Rendered {
    pub target: String,
    /// Which agent binary the pilots run and where it comes from.
    pub agents: Vec<String>,
    pub files: Vec<RenderedFileOut>,
    pub commands: Vec<CommandLine>,
}

/// One rendered file (`agent.sbatch`, `task-definition.json`, ...).
#[derive(Debug, Serialize)]
pub struct RenderedFileOut {
    /// `None`: the target's generic pool.
    pub tag: Option<String>,
    pub name: String,
    pub text: String,
}

/// One command line the provider would run.
#[derive(Debug, Serialize)]
pub struct CommandLine {
    pub tag: Option<String>,
    pub command: String,
}

pub fn exec(ctx: &Context<'_>, args: RenderArgs) -> Result<ExitCode, CliError> {
    let target = require_target(&args.m)?;
    let manifest = load_manifest_file(&args.m)?;
    let access = broker_access(ctx.access, ctx.json);
    let r = render_target(&args.m, &manifest, &target, args.tag.as_deref(), &access)?;
    let out = match (ctx.json, args.commands) {
        (true, true) => output::json(&serde_json::json!({
            "target": r.target,
            "agents": r.agents,
            "commands": r.commands,
        })),
        (true, false) => output::json(&serde_json::json!({
            "target": r.target,
            "agents": r.agents,
            "files": r.files,
        })),
        (false, commands) => {
            // Which binary the pilots run goes to stderr: stdout is exactly
            // what is submitted.
            for agent in &r.agents {
                eprintln!("note: pilots run {agent}");
            }
            match commands {
                true => commands_text(&r),
                false => files_text(&r),
            }
        }
    };
    print_out(&out);
    Ok(ExitCode::Ok)
}

/// Which agent binary the pilots of `specs` run, once each.
fn agent_notes(specs: &[PilotSpec], access: &BrokerAccess) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for spec in specs {
        let agent = access
            .agent
            .for_pilot(&spec.provider, spec.image.as_deref());
        // A path is the user's own, but a control character in it must not
        // forge a line on the terminal.
        let shown: String = agent
            .describe()
            .chars()
            .map(|c| match c.is_control() {
                true => c.escape_debug().to_string(),
                false => c.to_string(),
            })
            .collect();
        if !lines.contains(&shown) {
            lines.push(shown);
        }
    }
    lines
}

/// Renders every pilot of `target` (or of one tag): its files and the
/// provider's dry-run command lines. Errors name the manifest and the
/// target, as validation errors do; exit 2.
pub fn render_target(
    m: &ManifestArgs,
    manifest: &Manifest,
    target: &str,
    tag: Option<&str>,
    access: &BrokerAccess,
) -> Result<Rendered, CliError> {
    let specs =
        crate::pilots::pilot_specs(manifest, target, tag, access).map_err(CliError::bad_input)?;
    let located =
        |e: String| CliError::bad_input(format!("{}: targets.{target}: {e}", m.file.display()));
    let t = manifest.target(target).expect("pilot_specs checked it");
    let agents = agent_notes(&specs, access);
    let mut files = Vec::new();
    for spec in &specs {
        for f in render::render(spec).map_err(|e| located(e.to_string()))? {
            files.push(RenderedFileOut {
                tag: spec.tag.clone(),
                name: f.name().to_string(),
                text: f.text().to_string(),
            });
        }
    }
    let commands = command_lines(t, specs, access).map_err(|e| match e {
        // A field the provider needs is the manifest's to fix: name its key.
        providers::ProviderError::Config { field, reason, .. } => CliError::bad_input(format!(
            "{}: targets.{target}.{field}: {reason}",
            m.file.display()
        ))
        .with_hint(format!("add {field}: under targets.{target}")),
        other => located(other.to_string()),
    })?;
    Ok(Rendered {
        target: target.to_string(),
        agents,
        files,
        commands,
    })
}

/// The provider's command lines that would start every pilot of `specs`.
fn command_lines(
    t: &scalable_common::manifest::Target,
    specs: Vec<PilotSpec>,
    access: &BrokerAccess,
) -> Result<Vec<CommandLine>, providers::ProviderError> {
    let ctx = providers::ProviderContext::new(
        std::path::Path::new(&access.token_file).with_file_name("pilots"),
    );
    let provider = providers::provider_for(t, &ctx);
    let mut out = Vec::new();
    // Pilot ids run on across tags, as the broker's do: each pilot its own directory.
    let mut next_id = 1;
    for spec in specs {
        let tag = spec.tag.clone();
        let count = spec.count.max(1);
        let ids = (next_id..next_id + count)
            .map(|i| format!("p-{i}"))
            .collect();
        next_id += count;
        let req = providers::StartRequest {
            pilot_ids: ids,
            spec,
            dry_run: true,
        };
        for command in provider.commands(&req)? {
            out.push(CommandLine {
                tag: tag.clone(),
                command,
            });
        }
    }
    Ok(out)
}

fn commands_text(r: &Rendered) -> String {
    let mut out = String::new();
    for c in &r.commands {
        out.push_str(&c.command);
        out.push('\n');
    }
    out
}

/// Every rendered file, each under a `# ---- NAME ----` header.
fn files_text(r: &Rendered) -> String {
    let mut out = String::new();
    for f in &r.files {
        out.push_str(&format!(
            "# ---- {} (target {}, tag {}) ----\n",
            f.name,
            r.target,
            f.tag.as_deref().unwrap_or("(generic pool)")
        ));
        out.push_str(&f.text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
