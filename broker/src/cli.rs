//! `scalable`, the user's CLI: argument parsing and one thin function per
//! command. Each command builds a request, calls the broker through
//! [`Client`], and prints through [`crate::output`] in text or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{
    Request, Response, RunRef, RunStatus, ScaleChange, SubmitRequest, TaskRef,
};
use scalable_common::template::is_template as workflow_template;
use scalable_common::units::{parse_duration_ms, parse_size_bytes};
use scalable_common::workflow::{self, parse_range, quick_job, Items, WorkflowDef};

use scalable_common::access as access_file;
use scalable_common::manifest::{load_manifest, process_env, LoadOptions, Manifest};

use crate::cli_error::CliError;
use crate::client::Client;
use crate::output::{self, Progress};
use crate::{pilots, providers, render};

/// How often `wait` asks the broker for progress.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(
    name = "scalable",
    version,
    about = "Submit and watch many-task workflows on a Scalable broker"
)]
pub struct Cli {
    /// The broker's access file (default: $SCALABLE_ACCESS, then ./.scalable/access.json).
    #[arg(long, global = true, value_name = "FILE")]
    pub access: Option<PathBuf>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submit a workflow file, or a command with `-- CMD ARGS...` (quick submit).
    Submit(SubmitArgs),
    /// Task counts per job of one run, or of every run.
    Status { run: Option<String> },
    /// Wait for a run to finish; exit 0 iff every task succeeded (or was cached).
    Wait { run: String },
    /// Cancel a run (RUN) or one task (RUN/JOB/INDEX or a task id).
    Cancel { target: String },
    /// Re-run what did not succeed in a finished run (rescue); successes stay.
    Resume {
        /// The run: an id or `last`.
        run: String,
        /// Wait for the resumed run to finish (exit 0 iff all succeeded).
        #[arg(long)]
        wait: bool,
    },
    /// Print the stdout (or stderr) kept for a task's attempt.
    Logs {
        task: String,
        #[arg(long)]
        attempt: Option<u32>,
        #[arg(long)]
        stderr: bool,
    },
    /// The agents connected now.
    Agents,
    /// Add or remove pilots of the broker's target: +N, -N or =N. Removal
    /// cancels pilots still queued first, then drains idle agents; busy ones
    /// only with --force.
    Scale {
        #[arg(long)]
        target: String,
        /// The tag (component) whose pilots to scale; none = the generic pool.
        #[arg(long)]
        tag: Option<String>,
        /// +N, -N or =N.
        #[arg(allow_hyphen_values = true)]
        change: String,
        /// Also stop pilots whose agents are busy (their tasks go back to ready).
        #[arg(long)]
        force: bool,
        /// Say what would be done (with the exact command lines); do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every pilot the broker submitted: provider id, state, queue wait.
    Pilots,
    /// pegasus-statistics-like summary of a run.
    Stats { run: String },
    /// pegasus-analyzer-like report of a run's failures.
    Analyze { run: String },
    /// Why a task is not running: missing tag, too large, dependency, throttle...
    Why { task: String },
    /// Check a manifest: `ok`, or every error as FILE:LINE:COL: path: message.
    Validate(ManifestArgs),
    /// Print exactly what would be submitted to start a target's agents.
    Render {
        #[command(flatten)]
        m: ManifestArgs,
        /// Only the pilots serving this tag (component).
        #[arg(long)]
        tag: Option<String>,
        /// Print the exact command lines the provider would run to start
        /// them (sbatch, aws, gcloud, kubectl), not the files.
        #[arg(long)]
        commands: bool,
    },
    /// Workers per tag and resources per worker for a target.
    Plan {
        #[command(flatten)]
        m: ManifestArgs,
        /// Print the plan only (the only mode until the scaler lands).
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// The manifest (scalable.yaml).
    pub file: PathBuf,
    #[arg(long)]
    pub target: Option<String>,
    /// Overlays to apply, in order (repeatable).
    #[arg(long = "overlay")]
    pub overlays: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The workflow YAML file (omit for quick submit).
    pub file: Option<PathBuf>,
    /// Wait for the run to finish and exit as `wait` does.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub tag: Option<String>,
    #[arg(long)]
    pub cpus: Option<u32>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub gpus: Option<u32>,
    /// A named custom resource each task needs, NAME=N (repeatable).
    #[arg(long = "resource", value_name = "NAME=N")]
    pub resources: Vec<String>,
    /// Run the command once per index, e.g. 1-100 (`{{ index }}` in the command).
    #[arg(long)]
    pub array: Option<String>,
    #[arg(long)]
    pub retries: Option<u32>,
    #[arg(long)]
    pub walltime: Option<String>,
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

/// Runs the CLI and returns the exit code. Every error is one line on stderr.
pub fn main_with(cli: Cli) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Failed.code();
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code.code(),
        Err(e) => {
            eprintln!("{e}");
            e.code
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let json = cli.json;
    let access = cli.access.as_deref();
    match cli.command {
        Command::Submit(args) => submit(access, json, args).await,
        Command::Status { run } => {
            let client = Client::connect(access).await?;
            let run = run.as_deref().map(parse_run).transpose()?;
            let Response::Status(runs) = client.call(&Request::Status { run }).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&runs)
            } else if runs.is_empty() {
                "no runs yet\n".into()
            } else {
                output::status_text(&runs)
            });
            Ok(ExitCode::Ok)
        }
        Command::Wait { run } => {
            let client = Client::connect(access).await?;
            let run = parse_run(&run)?;
            wait(&client, run, json).await
        }
        Command::Cancel { target } => {
            let client = Client::connect(access).await?;
            let req = if target.contains('/') {
                Request::Cancel {
                    run: None,
                    task: Some(parse_task(&target)?),
                }
            } else {
                Request::Cancel {
                    run: Some(parse_run(&target)?),
                    task: None,
                }
            };
            let Response::Cancelled { tasks } = client.call(&req).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                format!("{{\"cancelled\": {tasks}}}\n")
            } else {
                format!("cancelled {tasks} task(s)\n")
            });
            Ok(ExitCode::Ok)
        }
        Command::Resume {
            run,
            wait: and_wait,
        } => {
            let client = Client::connect(access).await?;
            let run = parse_run(&run)?;
            let Response::Resumed { run, tasks } = client.call(&Request::Resume { run }).await?
            else {
                return Err(unexpected());
            };
            print_out(if json {
                format!("{{\"run\": {run}, \"resumed\": {tasks}}}\n")
            } else {
                format!("run {run}: {tasks} task(s) run again\n")
            });
            if and_wait {
                return wait(&client, RunRef::Id(run), json).await;
            }
            Ok(ExitCode::Ok)
        }
        Command::Logs {
            task,
            attempt,
            stderr,
        } => {
            let client = Client::connect(access).await?;
            let task = parse_task(&task)?;
            let Response::Logs(logs) = client.call(&Request::Logs { task, attempt }).await? else {
                return Err(unexpected());
            };
            if json {
                print_out(output::json(&logs));
            } else {
                let bytes = output::logs_bytes(&logs, stderr);
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
                let total = if stderr {
                    logs.stderr_bytes
                } else {
                    logs.stdout_bytes
                };
                if total > bytes.len() as u64 {
                    eprintln!(
                        "note: showing the last {} of {total} bytes the task wrote",
                        bytes.len()
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
        Command::Scale {
            target,
            tag,
            change,
            force,
            dry_run,
        } => {
            let change = parse_scale_change(&change)?;
            let client = Client::connect(access).await?;
            let req = Request::Scale {
                target,
                tag,
                change,
                force,
                dry_run,
            };
            let Response::Scaled(r) = client.call(&req).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&r)
            } else {
                output::scale_text(&r)
            });
            Ok(ExitCode::Ok)
        }
        Command::Pilots => {
            let client = Client::connect(access).await?;
            let Response::Pilots(list) = client.call(&Request::Pilots).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&list)
            } else {
                output::pilots_text(&list)
            });
            Ok(ExitCode::Ok)
        }
        Command::Agents => {
            let client = Client::connect(access).await?;
            let Response::Agents(agents) = client.call(&Request::Agents).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&agents)
            } else {
                output::agents_text(&agents, now_ms())
            });
            Ok(ExitCode::Ok)
        }
        Command::Stats { run } => {
            let client = Client::connect(access).await?;
            let run = parse_run(&run)?;
            let Response::Stats(s) = client.call(&Request::Stats { run }).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&s)
            } else {
                output::stats_text(&s)
            });
            Ok(ExitCode::Ok)
        }
        Command::Validate(m) => {
            let manifest = load_manifest_file(&m)?;
            if json {
                print_out(output::json(&manifest));
            } else {
                print_out("ok".into());
            }
            Ok(ExitCode::Ok)
        }
        Command::Render { m, tag, commands } => {
            let target = require_target(&m)?;
            let manifest = load_manifest_file(&m)?;
            let access = broker_access(access);
            let specs = pilots::pilot_specs(&manifest, &target, tag.as_deref(), &access)
                .map_err(CliError::bad_input)?;
            let mut out = String::new();
            if commands {
                let t = manifest.target(&target).expect("pilot_specs checked it");
                let ctx = providers::ProviderContext::new(
                    std::path::Path::new(&access.token_file).with_file_name("pilots"),
                );
                let provider = providers::provider_for(t, &ctx);
                for spec in specs {
                    let ids = (1..=spec.count.max(1)).map(|i| format!("p-{i}")).collect();
                    let req = providers::StartRequest {
                        pilot_ids: ids,
                        spec,
                        dry_run: true,
                    };
                    let lines = provider.commands(&req).map_err(|e| {
                        CliError::bad_input(format!("{}: targets.{target}: {e}", m.file.display()))
                    })?;
                    for l in lines {
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
                print_out(out);
                return Ok(ExitCode::Ok);
            }
            for spec in &specs {
                let files = render::render(spec).map_err(|e| {
                    CliError::bad_input(format!("{}: targets.{target}: {e}", m.file.display()))
                })?;
                for f in files {
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
            print_out(out);
            Ok(ExitCode::Ok)
        }
        Command::Plan { m, dry_run: _ } => {
            let target = require_target(&m)?;
            let manifest = load_manifest_file(&m)?;
            let rows = pilots::plan(&manifest, &target).map_err(CliError::bad_input)?;
            let t = manifest.target(&target).expect("plan checked it");
            let provider = t.provider.name();
            // Cost of running every row's workers for one walltime (Slurm) or an hour.
            let hours = match &t.provider {
                scalable_common::manifest::Provider::Slurm {
                    walltime_ms: Some(w),
                    ..
                } => *w as f64 / 3_600_000.0,
                _ => 1.0,
            };
            let ctx = providers::ProviderContext::new(std::env::temp_dir());
            let p = providers::provider_for(t, &ctx);
            let access = broker_access(access);
            let specs = pilots::pilot_specs(&manifest, &target, None, &access)
                .map_err(CliError::bad_input)?;
            let costs: Vec<(String, u32, providers::CostEstimate)> = specs
                .iter()
                .zip(&rows)
                .map(|(s, r)| {
                    (
                        r.tag.clone(),
                        r.workers,
                        p.estimate_cost(s, r.workers, hours),
                    )
                })
                .collect();
            print_out(if json {
                let c: Vec<serde_json::Value> = costs
                    .iter()
                    .map(|(tag, w, c)| serde_json::json!({"tag": tag, "workers": w, "hours": hours, "cost": c}))
                    .collect();
                output::json(&serde_json::json!({"rows": rows, "cost": c}))
            } else {
                let mut text = pilots::plan_text(&target, provider, &rows);
                for (tag, w, c) in &costs {
                    text.push_str(&match c.total {
                        Some(total) => format!(
                            "cost {tag}: {w} worker(s) x {hours:.2} h x {:.3} {cur}/h = {total:.2} {cur} ({})\n",
                            c.per_pilot_hour.unwrap_or(0.0),
                            c.source,
                            cur = c.currency
                        ),
                        None => format!("cost {tag}: unknown ({})\n", c.source),
                    });
                }
                text
            });
            Ok(ExitCode::Ok)
        }
        Command::Why { task } => {
            let client = Client::connect(access).await?;
            let task = parse_task(&task)?;
            let Response::Why(w) = client.call(&Request::Why { task }).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&w)
            } else {
                crate::output_why::why_text(&w)
            });
            Ok(ExitCode::Ok)
        }
        Command::Analyze { run } => {
            let client = Client::connect(access).await?;
            let run = parse_run(&run)?;
            let Response::Analyze(a) = client.call(&Request::Analyze { run }).await? else {
                return Err(unexpected());
            };
            print_out(if json {
                output::json(&a)
            } else {
                output::analyze_text(&a)
            });
            Ok(if a.failed > 0 {
                ExitCode::Failed
            } else {
                ExitCode::Ok
            })
        }
    }
}

fn unexpected() -> CliError {
    CliError::failed(
        "the broker sent an unexpected response (are the cli and broker the same version?)",
    )
}

fn print_out(s: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `last` or a run id.
pub fn parse_run(s: &str) -> Result<RunRef, CliError> {
    if s == "last" {
        return Ok(RunRef::Last);
    }
    s.parse::<u64>().map(RunRef::Id).map_err(|_| {
        CliError::bad_input(format!("{s:?} is not a run (expected a run id or `last`)"))
            .with_hint("scalable status lists the runs")
    })
}

/// `RUN/JOB/INDEX` or a task id.
pub fn parse_task(s: &str) -> Result<TaskRef, CliError> {
    let bad = || {
        CliError::bad_input(format!(
            "{s:?} is not a task (expected RUN/JOB/INDEX, e.g. 3/downscale/0, or a task id)"
        ))
    };
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [id] => id.parse::<u64>().map(TaskRef::Id).map_err(|_| bad()),
        [run, job, index] => Ok(TaskRef::Path {
            run: parse_run(run).map_err(|_| bad())?,
            job: job.to_string(),
            index: index.parse().map_err(|_| bad())?,
        }),
        [run, job] => Ok(TaskRef::Path {
            run: parse_run(run).map_err(|_| bad())?,
            job: job.to_string(),
            index: 0,
        }),
        _ => Err(bad()),
    }
}

fn load_workflow(path: &Path) -> Result<(WorkflowDef, String), CliError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {shown}: {}", io_reason(&e))))?;
    let def = workflow::parse_workflow(&shown, &text).map_err(|errs| {
        // Every error on its own line; the exit code says bad input.
        CliError::bad_input(errs.to_string().replace('\n', "\nerror: "))
    })?;
    Ok((def, shown))
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn quick_workflow(args: &SubmitArgs) -> Result<WorkflowDef, CliError> {
    let items = match &args.array {
        None => Items::One,
        Some(a) => {
            let (start, end) =
                parse_range(a).map_err(|e| CliError::bad_input(format!("--array {a}: {e}")))?;
            Items::Range { start, end }
        }
    };
    let name = args.name.clone().unwrap_or_else(|| {
        Path::new(&args.command[0])
            .file_name()
            .map(|s| {
                s.to_string_lossy().replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                    "_",
                )
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "task".into())
    });
    // SPEC §4: in quick submit `{{ index }}` is the array index (as Slurm's
    // SLURM_ARRAY_TASK_ID), i.e. the item; the task path keeps 0-based indices.
    let array = matches!(items, Items::Range { .. });
    let command = args
        .command
        .iter()
        .map(|a| {
            if array && workflow_template(a) {
                format!("{{% set index = item %}}{a}")
            } else {
                a.clone()
            }
        })
        .collect();
    let mut job = quick_job(&name, command, items);
    job.tag = args.tag.clone();
    job.resources.cpus = args.cpus;
    job.resources.gpus = args.gpus;
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
    let def = WorkflowDef {
        name: name.clone(),
        max_fails: None,
        jobs: vec![job],
    };
    workflow::validate(&def, "submit").map_err(|e| CliError::bad_input(e.to_string()))?;
    Ok(def)
}

/// Loads, expands (with this process's environment) and validates a manifest;
/// every error on its own line, exit 2.
fn load_manifest_file(m: &ManifestArgs) -> Result<Manifest, CliError> {
    let shown = m.file.display().to_string();
    let text = std::fs::read_to_string(&m.file)
        .map_err(|e| CliError::bad_input(format!("cannot read {shown}: {}", io_reason(&e))))?;
    let opts = LoadOptions {
        target: m.target.as_deref(),
        overlays: &m.overlays,
        env: &process_env,
    };
    load_manifest(&shown, &text, &opts)
        .map_err(|errs| CliError::bad_input(errs.to_string().replace('\n', "\nerror: ")))
}

/// `+N`, `-N` or `=N`.
fn parse_scale_change(s: &str) -> Result<ScaleChange, CliError> {
    let bad = || {
        CliError::bad_input(format!("scale: {s:?} is not +N, -N or =N"))
            .with_hint("e.g. scalable scale --target hpc --tag demeter =2")
    };
    let (op, n) = s.split_at(s.chars().next().map_or(0, char::len_utf8));
    let n: u32 = n.parse().map_err(|_| bad())?;
    match op {
        "+" => Ok(ScaleChange::Add(n)),
        "-" => Ok(ScaleChange::Remove(n)),
        "=" => Ok(ScaleChange::Set(n)),
        _ => Err(bad()),
    }
}

fn require_target(m: &ManifestArgs) -> Result<String, CliError> {
    m.target.clone().ok_or_else(|| {
        CliError::bad_input(format!("{}: --target T is required here", m.file.display())).with_hint(
            "scalable validate FILE lists nothing wrong; the targets are the keys under targets:",
        )
    })
}

/// The broker's address and fingerprint from the access file when there is one;
/// placeholders otherwise (render still shows the shape).
fn broker_access(explicit: Option<&Path>) -> pilots::BrokerAccess {
    let agent_path = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("scalable-agent").display().to_string())
        .unwrap_or_else(|| "scalable-agent".into());
    match access_file::find_access(explicit)
        .and_then(|p| access_file::load_access(&p).map(|a| (p, a)))
    {
        Ok((path, a)) => pilots::BrokerAccess {
            address: a.address,
            fingerprint: a.fingerprint,
            token_file: path.with_file_name("agent.token").display().to_string(),
            agent_path,
        },
        Err(_) => {
            eprintln!("note: no broker access file found; the broker address and fingerprint are placeholders");
            pilots::BrokerAccess {
                address: "BROKER_HOST:7420".into(),
                fingerprint: "0".repeat(64),
                token_file: ".scalable/agent.token".into(),
                agent_path,
            }
        }
    }
}

async fn submit(access: Option<&Path>, json: bool, args: SubmitArgs) -> Result<ExitCode, CliError> {
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
    let from_manifest = match (&args.file, args.command.is_empty(), &manifest) {
        (None, true, Some(m)) => Some(m.workflow.clone().ok_or_else(|| {
            CliError::bad_input(format!(
                "{}: has no workflow: section; give a workflow file too",
                args.manifest
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?),
        _ => None,
    };
    let (workflow, source) = match (&args.file, args.command.is_empty()) {
        _ if from_manifest.is_some() => (
            from_manifest.expect("checked"),
            args.manifest
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        (Some(_), false) => {
            return Err(CliError::bad_input(
                "give either a workflow file or a command after --, not both",
            ))
        }
        (Some(f), true) => load_workflow(f)?,
        (None, false) => (quick_workflow(&args)?, "-".to_string()),
        (None, true) => {
            return Err(CliError::bad_input("nothing to submit")
                .with_hint("scalable submit workflow.yaml, or scalable submit -- CMD ARGS..."))
        }
    };
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::bad_input(format!("cannot read the current directory: {e}")))?
        .to_string_lossy()
        .into_owned();
    let client = Client::connect(access).await?;
    let resp = client
        .call(&Request::Submit(SubmitRequest {
            workflow,
            cwd,
            source,
            manifest_json,
        }))
        .await?;
    let Response::Submitted { run, tasks } = resp else {
        return Err(unexpected());
    };
    if json {
        print_out(format!("{{\"run\": {run}, \"tasks\": {tasks}}}"));
    } else {
        print_out(format!("{run}"));
    }
    if args.wait {
        return wait(&client, RunRef::Id(run), json).await;
    }
    Ok(ExitCode::Ok)
}

async fn wait(client: &Client, run: RunRef, json: bool) -> Result<ExitCode, CliError> {
    let mut progress: Option<Progress> = None;
    loop {
        let Response::Status(mut runs) = client
            .call(&Request::Status {
                run: Some(run.clone()),
            })
            .await?
        else {
            return Err(unexpected());
        };
        let Some(status) = runs.pop() else {
            return Err(unexpected());
        };
        let p = progress.get_or_insert_with(|| Progress::new(status.run, status.counts.total()));
        p.update(&status.counts, now_ms());
        if status.state != "running" {
            p.finish(&status.counts);
            return Ok(finish_wait(&status, json));
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

fn finish_wait(status: &RunStatus, json: bool) -> ExitCode {
    if json {
        print_out(output::json(status));
    } else {
        eprintln!(
            "run {} {}: {} succeeded, {} failed, {} cancelled of {}",
            status.run,
            status.state,
            status.counts.succeeded + status.counts.cached,
            status.counts.failed,
            status.counts.cancelled,
            status.counts.total()
        );
    }
    if status.state == "succeeded" {
        ExitCode::Ok
    } else {
        if !json {
            eprintln!(
                "hint: scalable analyze {} names each failed task with its stderr",
                status.run
            );
        }
        ExitCode::Failed
    }
}
