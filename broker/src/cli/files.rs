//! What the CLI reads from disk before it talks to anyone: workflow files,
//! manifests (expanded with this process's environment), and the broker's
//! access file as `render` and `plan` show it to pilots.
//!
//! Must not: connect to the broker. Every error is one `CliError` line (each
//! manifest or workflow error on its own line), exit 2.

use std::path::{Path, PathBuf};

use clap::Args;
use scalable_common::access as access_file;
use scalable_common::input_file::{read_input_file, InputFileError};
use scalable_common::manifest::{
    load_manifest, process_env, LoadOptions, Manifest, MANIFEST_TEXT_BYTES_MAX,
};
use scalable_common::workflow::{self, WorkflowDef, WORKFLOW_TEXT_BYTES_MAX};

use crate::agent_binary::AgentLocation;
use crate::cli_error::CliError;
use crate::pilots;

// The manifest a command reads, with its target and overlays. (A `//` comment:
// a doc comment here would replace the `about` of `validate`, which takes it.)
#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// The manifest (scalable.yaml).
    pub file: PathBuf,
    /// The target (a key under targets:) to check the manifest for.
    #[arg(long)]
    pub target: Option<String>,
    /// Overlays to apply, in order (repeatable).
    #[arg(long = "overlay")]
    pub overlays: Vec<String>,
}

/// Reads and parses a workflow file; returns it with the name errors show.
pub fn load_workflow(path: &Path) -> Result<(WorkflowDef, String), CliError> {
    let shown = path.display().to_string();
    let text = read_bounded(path, &shown, WORKFLOW_TEXT_BYTES_MAX)?;
    let def = workflow::parse_workflow(&shown, &text).map_err(|errs| {
        // Every error on its own line; the exit code says bad input.
        CliError::bad_input(errs.to_string().replace('\n', "\nerror: "))
    })?;
    Ok((def, shown))
}

/// The text of a file the user named, bounded before anything parses it
/// (a device, a FIFO or a huge file is refused unread); exit 2.
fn read_bounded(path: &Path, shown: &str, max_bytes: usize) -> Result<String, CliError> {
    read_input_file(path, max_bytes).map_err(|e| {
        let err = CliError::bad_input(format!("cannot read {shown}: {e}"));
        match e {
            InputFileError::NotRegular(_) => err.with_hint("give the path of a regular file"),
            InputFileError::TooLarge { .. } => {
                err.with_hint("split it, or generate the items with range: instead of a list")
            }
            _ => err,
        }
    })
}

/// Loads, expands (with this process's environment) and validates a manifest;
/// every error on its own line, exit 2.
pub fn load_manifest_file(m: &ManifestArgs) -> Result<Manifest, CliError> {
    let shown = m.file.display().to_string();
    let text = read_bounded(&m.file, &shown, MANIFEST_TEXT_BYTES_MAX)?;
    let opts = LoadOptions {
        target: m.target.as_deref(),
        overlays: &m.overlays,
        env: &process_env,
    };
    load_manifest(&shown, &text, &opts)
        .map_err(|errs| CliError::bad_input(errs.to_string().replace('\n', "\nerror: ")))
}

/// `--target T`, which `render` and `plan` cannot do without.
pub fn require_target(m: &ManifestArgs) -> Result<String, CliError> {
    m.target.clone().ok_or_else(|| {
        CliError::bad_input(format!("{}: --target T is required here", m.file.display())).with_hint(
            "scalable validate FILE lists nothing wrong; the targets are the keys under targets:",
        )
    })
}

/// The broker's address and fingerprint from the access file when there is one;
/// placeholders otherwise (render still shows the shape), with a note on
/// stderr unless `quiet` (`--json`: stderr carries only a JSON error).
pub fn broker_access(explicit: Option<&Path>, quiet: bool) -> pilots::BrokerAccess {
    let agent = AgentLocation::resolve(None);
    match access_file::find_access(explicit)
        .and_then(|p| access_file::load_access(&p).map(|a| (p, a)))
    {
        Ok((path, a)) => pilots::BrokerAccess {
            address: a.address,
            fingerprint: a.fingerprint,
            token_file: path.with_file_name("agent.token").display().to_string(),
            agent,
        },
        Err(_) => {
            if !quiet {
                eprintln!("note: no broker access file found; the broker address and fingerprint are placeholders");
            }
            pilots::BrokerAccess {
                address: "BROKER_HOST:7420".into(),
                fingerprint: "0".repeat(64),
                token_file: ".scalable/agent.token".into(),
                agent,
            }
        }
    }
}
