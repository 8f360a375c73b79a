//! `scalable validate FILE [--target T]`: check a manifest; `ok`, or every
//! error as `FILE:LINE:COL: path: message` (exit 2). Needs no broker.
//!
//! Past the manifest's own checks it renders the pilots of the target (of
//! every target without `--target`) through `render`'s own code path, so
//! what validates also renders: the provider's checks (a Fargate target's
//! `subnet`, a Kubernetes namespace) run here too.
//!
//! Must not: check anything itself; `scalable_common::manifest` validates,
//! `render::render_target` renders.

use scalable_common::exit::ExitCode;

use super::files::{broker_access, load_manifest_file, ManifestArgs};
use super::render::render_target;
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

pub fn exec(ctx: &Context<'_>, m: ManifestArgs) -> Result<ExitCode, CliError> {
    let manifest = load_manifest_file(&m)?;
    // Placeholders are as good as a broker's address for the checks: quiet.
    let access = broker_access(ctx.access, true);
    let targets: Vec<String> = match &m.target {
        Some(t) => vec![t.clone()],
        None => manifest.targets.keys().cloned().collect(),
    };
    for target in &targets {
        render_target(&m, &manifest, target, None, &access)?;
    }
    print_out(&if ctx.json {
        output::json(&manifest)
    } else {
        "ok".into()
    });
    Ok(ExitCode::Ok)
}
