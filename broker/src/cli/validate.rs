//! `scalable validate FILE`: check a manifest; `ok`, or every error as
//! `FILE:LINE:COL: path: message` (exit 2). Needs no broker.
//!
//! Must not: check anything itself; `scalable_common::manifest` validates.

use scalable_common::exit::ExitCode;

use super::files::{load_manifest_file, ManifestArgs};
use super::Context;
use crate::cli_error::CliError;
use crate::output::{self, print_out};

pub fn exec(ctx: &Context<'_>, m: ManifestArgs) -> Result<ExitCode, CliError> {
    let manifest = load_manifest_file(&m)?;
    print_out(&if ctx.json {
        output::json(&manifest)
    } else {
        "ok".into()
    });
    Ok(ExitCode::Ok)
}
