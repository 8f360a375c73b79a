//! `scalable render FILE --target T [--tag G] [--commands]`: exactly what
//! would be submitted to start a target's agents (the files), or the command
//! lines the provider would run. Needs no broker; reads its access file when
//! there is one.
//!
//! Must not: render or build command lines itself; `crate::render` and the
//! providers do, this only joins their output.

use clap::Args;
use scalable_common::exit::ExitCode;

use super::files::{broker_access, load_manifest_file, require_target, ManifestArgs};
use super::Context;
use crate::cli_error::CliError;
use crate::output::print_out;
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

pub fn exec(ctx: &Context<'_>, args: RenderArgs) -> Result<ExitCode, CliError> {
    let m = &args.m;
    let target = require_target(m)?;
    let manifest = load_manifest_file(m)?;
    let access = broker_access(ctx.access);
    let specs = crate::pilots::pilot_specs(&manifest, &target, args.tag.as_deref(), &access)
        .map_err(CliError::bad_input)?;
    // Which binary the pilots run goes to stderr: stdout is exactly what is submitted.
    for line in agent_notes(&specs, &access) {
        eprintln!("{line}");
    }
    // Errors name the manifest and the target, as validation errors do.
    let located =
        |e: String| CliError::bad_input(format!("{}: targets.{target}: {e}", m.file.display()));
    let out = if args.commands {
        let t = manifest.target(&target).expect("pilot_specs checked it");
        command_lines(t, specs, &access).map_err(located)?
    } else {
        files_text(&target, &specs, ctx.json).map_err(located)?
    };
    print_out(&out);
    Ok(ExitCode::Ok)
}

/// `note: pilots run …` once per distinct agent binary of `specs`.
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
        let line = format!("note: pilots run {shown}");
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// The provider's command lines that would start every pilot of `specs`.
fn command_lines(
    t: &scalable_common::manifest::Target,
    specs: Vec<PilotSpec>,
    access: &BrokerAccess,
) -> Result<String, String> {
    let ctx = providers::ProviderContext::new(
        std::path::Path::new(&access.token_file).with_file_name("pilots"),
    );
    let provider = providers::provider_for(t, &ctx);
    let mut out = String::new();
    for spec in specs {
        let ids = (1..=spec.count.max(1)).map(|i| format!("p-{i}")).collect();
        let req = providers::StartRequest {
            pilot_ids: ids,
            spec,
            dry_run: true,
        };
        for l in provider.commands(&req).map_err(|e| e.to_string())? {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Every rendered file of `specs`, each under a `# ---- NAME ----` header
/// unless it is the only file's JSON (so `--json` output parses).
fn files_text(target: &str, specs: &[PilotSpec], json: bool) -> Result<String, String> {
    let mut out = String::new();
    for spec in specs {
        for f in render::render(spec).map_err(|e| e.to_string())? {
            if specs.len() > 1 || !json {
                out.push_str(&format!(
                    "# ---- {} (target {target}, tag {}) ----\n",
                    f.name(),
                    spec.tag.as_deref().unwrap_or("(generic pool)")
                ));
            }
            out.push_str(f.text());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    Ok(out)
}
