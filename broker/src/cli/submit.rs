//! `scalable submit [FILE] [--manifest M] [-- CMD ARGS...]`: send a workflow
//! to the broker: a workflow file, a manifest's `workflow:` section, or one
//! command (quick submit, `--array` for many). With `--wait`, end as `wait`.
//!
//! Everything is parsed and validated here first (exit 2 before anything is
//! sent); the workflow goes out unexpanded, so a million-task range is one job.
//!
//! Must not: expand ranges or render templates; the broker's `submit` plans.

use std::path::{Path, PathBuf};

use clap::Args;
use scalable_common::exit::ExitCode;
use scalable_common::frame::{encode_frame, FrameError};
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{Request, RunRef, SubmitRequest};
use scalable_common::template::is_template as workflow_template;
use scalable_common::units::{parse_duration_ms, parse_size_bytes};
use scalable_common::workflow::{self, parse_range, quick_job, Items, JobDef, WorkflowDef};

use super::files::{load_manifest_file, load_workflow, ManifestArgs};
use super::request::{ask, Submitted};
use super::wait::wait_for;
use super::Context;
use crate::cli_error::CliError;
use crate::client::Client;
use crate::output::{self, print_out};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The workflow YAML file (omit for quick submit).
    pub file: Option<PathBuf>,
    /// Wait for the run to finish and exit as `wait` does.
    #[arg(long)]
    pub wait: bool,
    /// Quick submit: run only on agents serving this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Quick submit: cpus each task needs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Quick submit: memory each task needs, e.g. 2G.
    #[arg(long)]
    pub memory: Option<String>,
    /// Quick submit: gpus each task needs.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// A named custom resource each task needs, NAME=N (repeatable).
    #[arg(long = "resource", value_name = "NAME=N")]
    pub resources: Vec<String>,
    /// Run the command once per index, e.g. 1-100 (`{{ index }}` in the command).
    #[arg(long)]
    pub array: Option<String>,
    /// Quick submit: times a failed task is tried again (default 0).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Quick submit: the most each task may run, e.g. 90m or 04:00:00.
    #[arg(long)]
    pub walltime: Option<String>,
    /// Quick submit: the job's name (default: the program's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// A feature stored with each task for the advisors (k=v, repeatable).
    #[arg(long = "feature", value_name = "K=V")]
    pub features: Vec<String>,
    /// A manifest whose `tasks:` bind the workflow's `task:` jobs (and whose
    /// `workflow:` section is submitted when no workflow file is given).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The manifest target (checks the workflow against its workers).
    #[arg(long)]
    pub target: Option<String>,
    /// Manifest overlays to apply, in order (repeatable).
    #[arg(long = "overlay")]
    pub overlays: Vec<String>,
    /// The command of a quick submit.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub async fn exec(ctx: &Context<'_>, args: SubmitArgs) -> Result<ExitCode, CliError> {
    if let (Some(t), None) = (&args.target, &args.manifest) {
        // Ignoring it would accept a workflow the target was never asked about.
        return Err(CliError::bad_input(format!(
            "--target {t} needs --manifest FILE (a target is one of the manifest's)"
        ))
        .with_hint("scalable submit WORKFLOW --manifest scalable.yaml --target T"));
    }
    if let (Some(o), None) = (args.overlays.first(), &args.manifest) {
        // The broker's own manifest is loaded once, with the broker's
        // overlays; silently dropping this one ran a whole run unsized.
        return Err(CliError::bad_input(format!(
            "--overlay {o} needs --manifest FILE (overlays apply to the manifest named here)"
        ))
        .with_hint("scalable submit WORKFLOW --manifest scalable.yaml --overlay NAME"));
    }
    let manifest = match &args.manifest {
        Some(file) => Some(load_manifest_file(&ManifestArgs {
            file: file.clone(),
            target: args.target.clone(),
            overlays: args.overlays.clone(),
        })?),
        None => None,
    };
    let manifest_json = manifest
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| CliError::failed(format!("cannot encode the manifest: {e}")))?;
    let (workflow, source) = what_to_submit(&args, manifest.as_ref())?;
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::bad_input(format!("cannot read the current directory: {e}")))?
        .to_string_lossy()
        .into_owned();
    let req = Request::Submit(SubmitRequest {
        workflow,
        cwd,
        source,
        manifest_json,
    });
    check_encoded_size(&req)?;
    let client = Client::connect(ctx.access).await?;
    let Submitted {
        run,
        tasks,
        unrunnable,
    } = ask(&client, &req).await?;
    print_out(&if ctx.json {
        format!("{{\"run\": {run}, \"tasks\": {tasks}}}")
    } else {
        format!("{run}")
    });
    // At once, not after a wait that cannot end: stdout stays the run id.
    for u in &unrunnable {
        if ctx.json {
            eprintln!("{}", output::unrunnable_json(u));
        } else {
            eprintln!("{}", output::unrunnable_text(u));
        }
    }
    if args.wait {
        return wait_for(&client, RunRef::Id(run), ctx.json).await;
    }
    Ok(ExitCode::Ok)
}

/// A workflow that validates can still encode past the message cap (long
/// lists of items, long arguments): that is the user's input to shrink, exit
/// 2 with the size and the cap, before anything is sent.
fn check_encoded_size(req: &Request) -> Result<(), CliError> {
    match encode_frame(req) {
        Ok(_) => Ok(()),
        Err(FrameError::TooLarge { len, max }) => Err(CliError::bad_input(format!(
            "the workflow encodes to {len} bytes, more than the message cap of {max}"
        ))
        .with_hint("use range: instead of long foreach lists, or split it into several runs")),
        Err(e) => Err(CliError::bad_input(format!(
            "cannot encode the workflow: {e}"
        ))),
    }
}

/// The workflow to submit and the name its errors use: the manifest's
/// `workflow:` section (no file and no command), a workflow file, or the
/// command of a quick submit (`-`).
fn what_to_submit(
    args: &SubmitArgs,
    manifest: Option<&Manifest>,
) -> Result<(WorkflowDef, String), CliError> {
    let manifest_path = || {
        args.manifest
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    match (&args.file, args.command.is_empty(), manifest) {
        (None, true, Some(m)) => {
            let workflow = m.workflow.clone().ok_or_else(|| {
                CliError::bad_input(format!(
                    "{}: has no workflow: section; give a workflow file too",
                    manifest_path()
                ))
            })?;
            Ok((workflow, manifest_path()))
        }
        (Some(_), false, _) => Err(CliError::bad_input(
            "give either a workflow file or a command after --, not both",
        )),
        (Some(f), true, _) => load_workflow(f),
        (None, false, _) => Ok((quick_workflow(args)?, "-".to_string())),
        (None, true, None) => Err(CliError::bad_input("nothing to submit")
            .with_hint("scalable submit workflow.yaml, or scalable submit -- CMD ARGS...")),
    }
}

/// The one-job workflow of a quick submit, validated like a file's.
fn quick_workflow(args: &SubmitArgs) -> Result<WorkflowDef, CliError> {
    check_split_template(&args.command)?;
    let items = quick_items(args.array.as_deref())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| name_from_program(&args.command[0]));
    let command = quick_command(&args.command, matches!(items, Items::Range { .. }));
    let mut job = quick_job(&name, command, items);
    job.tag = args.tag.clone();
    job.resources.cpus = args.cpus;
    job.resources.gpus = args.gpus;
    set_limits(&mut job, args)?;
    add_resources_and_features(&mut job, args)?;
    let def = WorkflowDef {
        name: name.clone(),
        max_fails: None,
        jobs: vec![job],
    };
    workflow::validate(&def, "submit").map_err(|e| CliError::bad_input(e.to_string()))?;
    Ok(def)
}

/// `-- ./model {{ index }}` typed without quotes reaches us as the words
/// `{{`, `index`, `}}`: the shell split the template at its spaces. Say so,
/// with the quoted form, rather than a template syntax error.
fn check_split_template(command: &[String]) -> Result<(), CliError> {
    let opens = |w: &str, o: &str, c: &str| w.contains(o) && !w.contains(c);
    for (open, close) in [("{{", "}}"), ("{%", "%}")] {
        let Some(start) = command.iter().position(|w| opens(w, open, close)) else {
            continue;
        };
        let Some(len) = command[start + 1..]
            .iter()
            .position(|w| opens(w, close, open))
        else {
            continue;
        };
        let joined = command[start..=start + 1 + len].join(" ");
        return Err(CliError::bad_input(format!(
            "the shell split the template {joined:?} into {} words",
            len + 2
        ))
        .with_hint(format!("quote it: '{joined}'")));
    }
    Ok(())
}

/// One task, or one per index of `--array A-B`.
fn quick_items(array: Option<&str>) -> Result<Items, CliError> {
    let Some(a) = array else {
        return Ok(Items::One);
    };
    let (start, end) =
        parse_range(a).map_err(|e| CliError::bad_input(format!("--array {a}: {e}")))?;
    Ok(Items::Range { start, end })
}

/// The job's name from its program: the file name with anything but
/// letters, digits, `-` and `_` replaced, or `task`.
fn name_from_program(program: &str) -> String {
    Path::new(program)
        .file_name()
        .map(|s| {
            s.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "_",
            )
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "task".into())
}

/// SPEC §4: in quick submit `{{ index }}` is the array index (as Slurm's
/// SLURM_ARRAY_TASK_ID), i.e. the item; the task path keeps 0-based indices.
fn quick_command(command: &[String], array: bool) -> Vec<String> {
    command
        .iter()
        .map(|a| {
            if array && workflow_template(a) {
                format!("{{% set index = item %}}{a}")
            } else {
                a.clone()
            }
        })
        .collect()
}

/// `--memory`, `--walltime` and `--retries`.
fn set_limits(job: &mut JobDef, args: &SubmitArgs) -> Result<(), CliError> {
    if let Some(m) = &args.memory {
        job.resources.memory_bytes =
            Some(parse_size_bytes(m).map_err(|e| CliError::bad_input(format!("--memory: {e}")))?);
    }
    if let Some(w) = &args.walltime {
        job.walltime_ms = Some(
            parse_duration_ms(w).map_err(|e| CliError::bad_input(format!("--walltime: {e}")))?,
        );
    }
    job.retries = args.retries.unwrap_or(0);
    Ok(())
}

/// `--resource NAME=N` and `--feature K=V` (both repeatable).
fn add_resources_and_features(job: &mut JobDef, args: &SubmitArgs) -> Result<(), CliError> {
    for r in &args.resources {
        let (k, v) = r
            .split_once('=')
            .and_then(|(k, v)| Some((k.trim(), v.trim().parse::<u64>().ok()?)))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                CliError::bad_input(format!("--resource {r:?}: expected NAME=N, e.g. licence=1"))
            })?;
        job.resources.custom.push((k.to_string(), v));
    }
    for f in &args.features {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            CliError::bad_input(format!("--feature {f:?}: expected K=V, e.g. size_mb=120"))
        })?;
        job.features.push((k.to_string(), v.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// `scalable submit ARGV...` as clap parses it.
    fn args(argv: &[&str]) -> SubmitArgs {
        let full = ["scalable", "submit"]
            .into_iter()
            .chain(argv.iter().copied());
        let cli = Cli::try_parse_from(full).expect("parses");
        match cli.command {
            Command::Submit(a) => a,
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn a_quick_array_submit_binds_index_to_the_item() {
        let a = args(&[
            "--array",
            "1-3",
            "--memory",
            "1G",
            "--resource",
            "lic=2",
            "--",
            "./sim.sh",
            "{{ index }}",
        ]);
        let def = quick_workflow(&a).expect("valid");
        assert_eq!(def.name, "sim_sh");
        let job = &def.jobs[0];
        assert_eq!(
            job.command,
            ["./sim.sh", "{% set index = item %}{{ index }}"]
        );
        assert!(matches!(job.items, Items::Range { start: 1, end: 3 }));
        assert_eq!(job.resources.memory_bytes, Some(1 << 30));
        assert_eq!(job.resources.custom, [("lic".to_string(), 2)]);
    }

    #[test]
    fn a_template_the_shell_split_is_named_with_its_quoted_form() {
        let split = args(&["--array", "1-100", "--", "./model", "{{", "index", "}}"]);
        assert_eq!(
            quick_workflow(&split).unwrap_err().to_string(),
            "error: the shell split the template \"{{ index }}\" into 3 words (hint: quote it: '{{ index }}')"
        );
        let quoted = args(&["--array", "1-3", "--", "./model", "--n={{ index }}"]);
        assert!(quick_workflow(&quoted).is_ok());
    }

    #[test]
    fn what_to_submit_refuses_both_and_neither() {
        let both = args(&["wf.yaml", "--", "true"]);
        let e = what_to_submit(&both, None).unwrap_err();
        assert_eq!(e.code, ExitCode::BadInput);
        assert!(e.message.contains("not both"), "{e}");
        let e = what_to_submit(&args(&[]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error: nothing to submit (hint: scalable submit workflow.yaml, or scalable submit -- CMD ARGS...)"
        );
        let e = quick_workflow(&args(&["--feature", "x", "--", "true"])).unwrap_err();
        assert!(e.message.starts_with("--feature \"x\""), "{e}");
    }
}
