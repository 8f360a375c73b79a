//! Deployment providers (SPEC §8): start, watch and stop pilots through each
//! platform's own CLI with JSON output (SPEC §13): `sbatch`/`squeue`/`scancel`,
//! `aws ec2`/`aws ecs`, `gcloud compute`, `kubectl`, and agent processes here.
//!
//! Owns: the [`DeploymentProvider`] trait and its types, the factory
//! [`provider_for`], running a CLI ([`Cli`], [`Runner`]) with one-line errors,
//! the [`RateLimiter`] and [`batches`] helpers, the price table
//! ([`prices`], `prices/prices.json`).
//!
//! Must not: keep pilot records (the store does), decide how many pilots to run
//! (the core and the scaler do), or ever see the agent token. What a provider
//! submits comes from [`crate::render`], which has no token field: pilots read
//! the token from a file (Slurm: the state dir's `agent.token` on the shared
//! filesystem, named by `--token-file`; EC2/GCP: fetched at boot from the
//! secret store into a 0600 file) or from the environment (Fargate: an ECS
//! secret; Kubernetes: a Secret reference). No command line a provider runs
//! holds a token, so `ps` on the login node shows none.
//!
//! Every method is synchronous and may block for seconds (it runs CLIs and
//! sleeps in the rate limiter): async callers run it on a blocking thread
//! (`tokio::task::spawn_blocking`). `status` and `stop` make one CLI call per
//! [`batches`] chunk for all the ids they are given, never one per pilot: a
//! controller flooded by per-job `squeue` calls is what users complain about.
//!
//! Matching agents to pilots: each [`StartedPilot`] says, in
//! [`StartedPilot::agent_id`], what its agent will report as `SCALABLE_PILOT_ID`
//! (set by the rendered script, user-data or pod spec): the Slurm job id, the
//! EC2 instance id, the GCE numeric instance id, the pilot id itself (Fargate,
//! local) or, for Kubernetes, the prefix of its pod's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use scalable_common::manifest::{AwsClusterType, Provider, Target};

use crate::render::{PilotSpec, RenderError};
use scalable_common::private_files;
use scalable_common::quote::shell_join;

pub mod aws;
pub mod gcp;
pub mod kubernetes;
pub mod local;
pub mod prices;
pub mod slurm;

#[cfg(test)]
pub(crate) mod testing;

// ------------------------------------------------------------------ limits

/// Ids in one status or stop call; longer lists are split (command lines and
/// the platforms' own request limits are finite).
pub const IDS_PER_CALL_MAX: usize = 200;
/// The first line of a CLI's stderr kept in an error.
const STDERR_LINE_CHARS_MAX: usize = 300;
/// Pilots one start request may ask for.
pub const PILOTS_PER_START_MAX: usize = crate::render::PILOT_COUNT_MAX as usize;

// ------------------------------------------------------------------ types

/// Pilots to start: one per id, all from one spec (one target, one tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// One per pilot, chosen by the caller (unique, e.g. `p-17`); used in file
    /// and object names, so letters, digits, `-` and `_` only.
    pub pilot_ids: Vec<String>,
    /// What each pilot is; its `count` is ignored (one pilot per id).
    pub spec: PilotSpec,
    /// Only say what would run: no file written, no command run.
    pub dry_run: bool,
}

/// What one started pilot is called where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedPilot {
    pub pilot_id: String,
    /// The provider's id: Slurm job id, EC2 instance id, ECS task ARN, GCE
    /// instance name, Kubernetes object name, local process id. `(dry run)`
    /// on a dry run.
    pub provider_id: String,
    /// What the pilot's agent will report as `SCALABLE_PILOT_ID`.
    pub agent_id: AgentId,
    /// The command lines run for this pilot (shared ones, such as one
    /// `run-instances` for all, are listed with each pilot).
    pub commands: Vec<String>,
}

/// How an agent's `SCALABLE_PILOT_ID` names its pilot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentId {
    /// The agent reports exactly this.
    Exact(String),
    /// The agent reports a name starting with this (Kubernetes pod names).
    Prefix(String),
}

impl AgentId {
    pub fn matches(&self, reported: &str) -> bool {
        match self {
            AgentId::Exact(id) => reported == id,
            AgentId::Prefix(p) => reported.starts_with(p.as_str()) && reported.len() > p.len(),
        }
    }
}

/// A pilot as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PilotState {
    /// Submitted, not running yet (Slurm PENDING, EC2 pending, pod Pending).
    Queued,
    Running,
    /// Gone or going for good; `reason` in the provider's words
    /// (`CANCELLED`, `terminated: User initiated`, `no longer known to Slurm`).
    Ended {
        reason: String,
    },
    /// The provider answered something this module does not know.
    Unknown,
}

/// A provider's state and its reason as one line: `terminated: User
/// initiated`, or the state alone when there is no reason.
pub(crate) fn state_with_reason(state: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() => format!("{state}: {r}"),
        _ => state.to_string(),
    }
}

/// A cost estimate and where its price came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostEstimate {
    /// `pilots × hours × per_pilot_hour`; `None` when the price is unknown.
    pub total: Option<f64>,
    pub currency: &'static str,
    pub per_pilot_hour: Option<f64>,
    /// Which price row was used, or `unknown price for …`.
    pub source: String,
}

impl CostEstimate {
    pub fn known(per_pilot_hour: f64, pilots: u32, hours: f64, source: String) -> CostEstimate {
        CostEstimate {
            total: Some(per_pilot_hour * f64::from(pilots) * hours),
            currency: prices::table().currency(),
            per_pilot_hour: Some(per_pilot_hour),
            source,
        }
    }

    pub fn unknown(source: String) -> CostEstimate {
        CostEstimate {
            total: None,
            currency: prices::table().currency(),
            per_pilot_hour: None,
            source,
        }
    }
}

/// Why a provider call failed: one line, what, where, hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{program} not found on PATH (hint: {hint})")]
    Missing { program: String, hint: String },
    #[error("`{command}` failed ({status}): {stderr} (hint: {hint})")]
    Failed {
        command: String,
        status: String,
        /// The first non-empty line of stderr.
        stderr: String,
        hint: String,
    },
    #[error("`{command}`: cannot read its output: {detail} (this is a bug in scalable or an unsupported {program} version)")]
    Output {
        command: String,
        program: String,
        detail: String,
    },
    #[error("target {target}: {field}: {reason}")]
    Config {
        target: String,
        field: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Request(String),
    #[error("cannot render the pilot: {0}")]
    Render(#[from] RenderError),
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
}

/// A provider of pilots. Synchronous: it runs CLIs; call it from a blocking
/// thread. Every method takes `&self` and may be called from several threads.
pub trait DeploymentProvider: Send + Sync {
    /// `slurm`, `ec2`, `fargate`, `gcp`, `kubernetes`, `local`.
    fn kind(&self) -> &'static str;

    /// What can be checked without starting anything: the CLI is on `PATH`,
    /// the target has the fields this provider needs.
    fn validate(&self) -> Result<(), ProviderError>;

    /// Starts one pilot per id (or, on a dry run, only says how).
    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError>;

    /// The state of each id, in the order given, from one batched call.
    /// An id the provider no longer knows is `Ended`.
    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError>;

    /// Stops (cancels, terminates, deletes) these pilots in one batched call.
    /// Their agents get SIGTERM first where the platform does that (Slurm,
    /// ECS, Kubernetes) and drain; an id already gone is not an error.
    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError>;

    /// The exact command lines `start` would run for `req`, in order.
    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError>;

    /// What `pilots` pilots of `spec` cost for `hours`, from the price table.
    fn estimate_cost(&self, spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate;
}

/// What a provider needs beyond the manifest target.
#[derive(Clone)]
pub struct ProviderContext {
    /// Where providers write what they submit (`<dir>/<pilot id>/agent.sbatch`,
    /// user-data, task definitions, Slurm output files), e.g. `STATE/pilots`.
    /// On the shared filesystem for Slurm.
    pub pilot_dir: PathBuf,
    /// The AWS API endpoint (`--endpoint-url`), e.g. moto's; `None` = AWS.
    /// The manifest has no `endpoint_url` yet; the broker may take it from
    /// `AWS_ENDPOINT_URL`.
    pub aws_endpoint_url: Option<String>,
    /// The ECS cluster Fargate pilots run in (default `default`).
    pub ecs_cluster: Option<String>,
    /// A Slurm site's price per node-hour (the manifest has no field yet).
    pub slurm_node_hour: Option<f64>,
    /// Extra environment for every CLI run (e.g. test credentials); never a
    /// command line.
    pub env: Vec<(String, String)>,
    /// The least time between two status/stop calls; `None`: the provider's
    /// default ([`slurm::QUERY_INTERVAL`], [`CLOUD_QUERY_INTERVAL`]).
    pub query_interval: Option<Duration>,
    /// Runs the commands; [`SystemRunner`] unless a test fakes it.
    pub runner: Arc<dyn Runner>,
}

impl ProviderContext {
    pub fn new(pilot_dir: impl Into<PathBuf>) -> ProviderContext {
        ProviderContext {
            pilot_dir: pilot_dir.into(),
            aws_endpoint_url: None,
            ecs_cluster: None,
            slurm_node_hour: None,
            env: Vec::new(),
            query_interval: None,
            runner: Arc::new(SystemRunner),
        }
    }

    fn cli(&self, program: &'static str, hint: &'static str) -> Cli {
        Cli {
            program,
            hint,
            env: self.env.clone(),
            runner: self.runner.clone(),
        }
    }

    fn limiter(&self, default: Duration) -> RateLimiter {
        RateLimiter::new(self.query_interval.unwrap_or(default))
    }
}

/// Default least time between two status/stop calls of a cloud provider.
pub const CLOUD_QUERY_INTERVAL: Duration = Duration::from_secs(1);

/// The provider for a manifest target.
pub fn provider_for(target: &Target, ctx: &ProviderContext) -> Box<dyn DeploymentProvider> {
    match &target.provider {
        Provider::Local { .. } => Box::new(local::LocalProvider::new(target, ctx)),
        Provider::Slurm { .. } => Box::new(slurm::SlurmProvider::new(target, ctx)),
        Provider::Aws {
            cluster_type: AwsClusterType::Ec2,
            ..
        } => Box::new(aws::Ec2Provider::new(target, ctx)),
        Provider::Aws {
            cluster_type: AwsClusterType::Fargate,
            ..
        } => Box::new(aws::FargateProvider::new(target, ctx)),
        Provider::Gcp { .. } => Box::new(gcp::GcpProvider::new(target, ctx)),
        Provider::Kubernetes { .. } => Box::new(kubernetes::KubernetesProvider::new(target, ctx)),
    }
}

// ------------------------------------------------------------------ running CLIs

/// Runs one command to completion. A trait so tests can answer for CLIs that
/// are not installed here (gcloud, a kube-apiserver).
pub trait Runner: Send + Sync {
    fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        env: &[(String, String)],
    ) -> std::io::Result<Output>;
}

/// Runs commands as child processes.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        env: &[(String, String)],
    ) -> std::io::Result<Output> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let Some(input) = stdin {
            use std::io::Write as _;
            // Dropped after writing, so the child sees end of input.
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input)?;
        }
        child.wait_with_output()
    }
}

/// One platform CLI: runs it, turns failures into one-line errors.
#[derive(Clone)]
pub struct Cli {
    program: &'static str,
    hint: &'static str,
    env: Vec<(String, String)>,
    runner: Arc<dyn Runner>,
}

impl Cli {
    /// Runs `argv` (whose first element is the program) and returns stdout.
    pub fn run(&self, argv: &[String], stdin: Option<&str>) -> Result<String, ProviderError> {
        let out = self.run_raw(argv, stdin)?;
        if !out.status.success() {
            return Err(self.failed(argv, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`Cli::run`], but a failed exit is the caller's to judge.
    pub fn run_raw(&self, argv: &[String], stdin: Option<&str>) -> Result<Output, ProviderError> {
        self.runner
            .run(argv, stdin.map(str::as_bytes), &self.env)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ProviderError::Missing {
                        program: argv[0].clone(),
                        hint: self.hint.to_string(),
                    }
                } else {
                    ProviderError::Failed {
                        command: shell_join(argv),
                        status: "not started".into(),
                        stderr: e.to_string(),
                        hint: self.hint.to_string(),
                    }
                }
            })
    }

    pub fn failed(&self, argv: &[String], out: &Output) -> ProviderError {
        ProviderError::Failed {
            command: shell_join(argv),
            status: match out.status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            },
            stderr: first_line(&out.stderr),
            hint: self.hint.to_string(),
        }
    }

    pub fn bad_output(&self, argv: &[String], detail: impl Into<String>) -> ProviderError {
        ProviderError::Output {
            command: shell_join(argv),
            program: self.program.to_string(),
            detail: detail.into(),
        }
    }

    /// `Missing` unless the program is on `PATH`.
    pub fn check_installed(&self) -> Result<(), ProviderError> {
        if on_path(self.program).is_some() {
            Ok(())
        } else {
            Err(ProviderError::Missing {
                program: self.program.to_string(),
                hint: self.hint.to_string(),
            })
        }
    }

    /// Runs `argv` and parses its stdout as JSON.
    pub fn run_json(
        &self,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<serde_json::Value, ProviderError> {
        let text = self.run(argv, stdin)?;
        serde_json::from_str(&text).map_err(|e| self.bad_output(argv, format!("not JSON: {e}")))
    }
}

/// The first non-empty line of a CLI's stderr, trimmed and bounded.
pub fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)");
    if line.chars().count() > STDERR_LINE_CHARS_MAX {
        let cut: String = line.chars().take(STDERR_LINE_CHARS_MAX).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// `program` on `PATH`, if there.
pub fn on_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------ rate limit and batches

/// Spaces calls at least `interval` apart (per provider): a caller that comes
/// too soon sleeps. Callers are served one at a time, in turn.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for this caller's turn; returns how long it slept.
    pub fn wait(&self) -> Duration {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let slept = match *next {
            Some(at) if at > now => {
                std::thread::sleep(at - now);
                at - now
            }
            _ => Duration::ZERO,
        };
        *next = Some(Instant::now() + self.interval);
        slept
    }
}

/// `ids` in chunks of at most `max`, without duplicates, in order.
pub fn batches(ids: &[String], max: usize) -> Vec<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<String> = ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    unique.chunks(max.max(1)).map(<[String]>::to_vec).collect()
}

/// The answer for `ids` in their order, from what one listing said; an id it
/// did not mention is `Ended { reason: gone }`.
pub fn states_in_order(
    ids: &[String],
    mut found: HashMap<String, PilotState>,
    gone: &str,
) -> Vec<(String, PilotState)> {
    ids.iter()
        .map(|id| {
            let state = found.remove(id).unwrap_or_else(|| PilotState::Ended {
                reason: gone.to_string(),
            });
            (id.clone(), state)
        })
        .collect()
}

// ------------------------------------------------------------------ shared checks

/// Pilot ids name files and cloud objects: short, letters, digits, `-`, `_`.
pub fn check_request(req: &StartRequest) -> Result<(), ProviderError> {
    if req.pilot_ids.is_empty() {
        return Err(ProviderError::Request("no pilot ids to start".into()));
    }
    if req.pilot_ids.len() > PILOTS_PER_START_MAX {
        return Err(ProviderError::Request(format!(
            "{} pilots in one start; at most {PILOTS_PER_START_MAX} (hint: start them in several requests)",
            req.pilot_ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for id in &req.pilot_ids {
        let ok = !id.is_empty()
            && id.len() <= 40
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(ProviderError::Request(format!(
                "pilot id {id:?} must be 1 to 40 letters, digits, '-' or '_' (it names files and cloud objects)"
            )));
        }
        if !seen.insert(id) {
            return Err(ProviderError::Request(format!(
                "pilot id {id:?} is given twice"
            )));
        }
    }
    Ok(())
}

/// Writes `text` to `dir/name` (creating `dir`), returning the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, ProviderError> {
    let io = |path: &Path, e: std::io::Error| ProviderError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    // Pilot files live under the state dir: the owner's only.
    private_files::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(name);
    private_files::create(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(|e| io(&path, e))?;
    Ok(path)
}

/// The single rendered file of `spec` with `count` overridden.
pub fn render_one(spec: &PilotSpec, count: u32) -> Result<crate::render::Rendered, ProviderError> {
    let mut one = spec.clone();
    one.count = count;
    let mut all = crate::render::render(&one)?;
    Ok(all.remove(0))
}

/// The region of a GCP zone (`us-central1-a` → `us-central1`).
pub fn zone_region(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(r, _)| r)
}

/// `s` as a lowercase DNS label fragment: other characters become `-`.
pub fn dns_label(s: &str) -> String {
    s.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
