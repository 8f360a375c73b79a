//! `scalable-agent`: the pilot. Dials out to a broker and runs what it is given.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use scalable_agent::cpuset::{self, CpuPool};
use scalable_agent::event_log::EventLog;
use scalable_agent::gpus::{self, GpuFlag};
use scalable_agent::runtime::{self, RuntimeFlag};
use scalable_agent::session::{self, AgentConfig, Exit};
use scalable_agent::{credentials, limits, orphan_guard, resources, warm};
use scalable_common::access::AgentTokenFile;
use scalable_common::exit::ExitCode;
use scalable_common::units::{parse_duration_ms, parse_size_bytes};

#[derive(Parser, Debug)]
#[command(
    name = "scalable-agent",
    version = scalable_common::handshake::version_text(),
    about = "The Scalable pilot agent"
)]
struct Args {
    /// The broker, HOST:PORT (default: the address in the token file).
    #[arg(short = 'c', long = "connect", env = "SCALABLE_BROKER")]
    connect: Option<String>,
    /// File with `address fingerprint token`, as the broker writes it.
    #[arg(long, env = "SCALABLE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The agent token (prefer --token-file or the env var: flags show in `ps`).
    #[arg(long, env = "SCALABLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// SHA-256 fingerprint of the broker's certificate.
    #[arg(long, env = "SCALABLE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Tags this agent serves (comma-separated); none = a generic pool.
    #[arg(long, env = "SCALABLE_TAGS", value_delimiter = ',')]
    tags: Vec<String>,
    /// Cpus to offer, or `auto`.
    #[arg(long, env = "SCALABLE_CPUS", default_value = "auto")]
    cpus: String,
    /// Memory to offer (e.g. 16G), or `auto`.
    #[arg(long, env = "SCALABLE_MEMORY", default_value = "auto")]
    memory: String,
    /// Gpus to offer, or `auto` (`CUDA_VISIBLE_DEVICES` if set, else `nvidia-smi`).
    #[arg(long, env = "SCALABLE_GPUS", default_value = "auto")]
    gpus: String,
    /// A named custom resource to offer, NAME=N (repeatable; e.g. licence=4).
    #[arg(
        long = "resource",
        env = "SCALABLE_RESOURCES",
        value_delimiter = ',',
        value_name = "NAME=N"
    )]
    resources: Vec<String>,
    /// Container runtime for tasks with an image: auto, none, apptainer,
    /// singularity, podman, docker or charliecloud.
    #[arg(long, env = "SCALABLE_RUNTIME", default_value = "auto")]
    runtime: String,
    /// Kill a task whose memory exceeds its request times this (request 0: no limit).
    #[arg(long, env = "SCALABLE_MEMORY_MARGIN", default_value = "1.2")]
    memory_margin: String,
    /// Leave after this long with nothing to run (e.g. 5m).
    #[arg(long, env = "SCALABLE_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// Leave after this long in all (e.g. 4h).
    #[arg(long, env = "SCALABLE_LIFETIME")]
    lifetime: Option<String>,
    /// Where task output files live (default: a fresh dir under $TMPDIR).
    #[arg(long, env = "SCALABLE_WORKDIR")]
    workdir: Option<PathBuf>,
    /// This agent's name (default: host-pid).
    #[arg(long, env = "SCALABLE_NAME")]
    name: Option<String>,
    /// Benchmark mode: complete every task at once without running it. For
    /// measuring the broker alone; never use it for real work.
    #[arg(long)]
    noop: bool,
    /// Give up if the broker cannot be reached for this long (e.g. 60s).
    #[arg(long, env = "SCALABLE_CONNECT_TIMEOUT", default_value = "60s")]
    connect_timeout: String,
    /// Longest wait between tries to reconnect to the broker (e.g. 10s).
    #[arg(long, env = "SCALABLE_RECONNECT_MAX", default_value = "10s")]
    reconnect_max: String,
    /// Append one line per spawn, kill, result sent, ack, promotion and discard
    /// to this file (for tests and audits; nothing is written without it).
    #[arg(long, env = "SCALABLE_EVENT_LOG")]
    event_log: Option<PathBuf>,
    /// No filesystem shared with the broker: run each task in a private
    /// directory, fetch its declared inputs there and hand its declared
    /// outputs back through the broker (SPEC §4).
    #[arg(
        long,
        env = "SCALABLE_NO_SHARED_FS",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    no_shared_fs: bool,
    /// With --no-shared-fs: move declared inputs and outputs through this S3
    /// store (`s3://bucket/prefix`, the target's `storage:`) with the `aws`
    /// CLI instead of through the broker; credentials and endpoint from the
    /// standard AWS environment.
    #[arg(long, env = "SCALABLE_STORAGE", value_name = "URL")]
    storage: Option<String>,
}

/// `--storage`, checked: a valid URL, and only with `--no-shared-fs`.
fn storage(
    args: &Args,
) -> Result<Option<std::sync::Arc<scalable_common::object_store::ObjectStore>>, String> {
    let Some(url) = args.storage.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !args.no_shared_fs {
        return Err("--storage is used only with --no-shared-fs (hint: add --no-shared-fs, or leave --storage out)".into());
    }
    let os = scalable_common::object_store::ObjectStore::parse(url)
        .map_err(|e| format!("--storage: {e}"))?
        .with_runner(scalable_agent::executor::helper::output);
    Ok(Some(std::sync::Arc::new(os)))
}

fn fail(code: ExitCode, msg: String) -> std::process::ExitCode {
    eprintln!("error: {msg}");
    code.into()
}

fn auto_or<T>(
    v: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if v == "auto" {
        Ok(None)
    } else {
        parse(v)
            .map(Some)
            .map_err(|e| format!("--{what} {v:?}: {e}"))
    }
}

/// `NAME=N` pairs, sorted by name, each name once.
fn parse_custom(items: &[String]) -> Result<Vec<(String, u64)>, String> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let bad = || format!("--resource {item:?}: expected NAME=N, e.g. licence=4");
        let (name, n) = item.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad());
        }
        if out.iter().any(|(k, _)| k == name) {
            return Err(format!("--resource {name}: given twice"));
        }
        out.push((name.to_string(), n));
    }
    out.sort();
    Ok(out)
}

/// The command line's values, parsed and checked.
struct Flags {
    cpus: Option<u32>,
    memory: Option<u64>,
    gpus: Option<u32>,
    runtime: RuntimeFlag,
    memory_margin: f64,
    idle_timeout: Option<Duration>,
    lifetime: Option<Duration>,
    connect_timeout: Duration,
    reconnect_max: Duration,
}

/// What this host offers the tasks, found once at start.
struct Host {
    gpu: gpus::Detected,
    runtimes: Vec<runtime::Runtime>,
    detected: resources::Detected,
    limit_mode: limits::LimitMode,
    limit_why: String,
    cpu_binding: Option<CpuPool>,
}

fn main() -> std::process::ExitCode {
    scalable_common::panic::install_bug_hook();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == orphan_guard::GUARD_ARG)
    {
        orphan_guard::run_guard();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == warm::WARM_ARG)
    {
        warm::run_trampoline();
    }
    let args = Args::parse();
    // Before any thread or child: nothing the agent starts may inherit these.
    let token_file = args.token_file.as_ref().map(|p| p.to_string_lossy());
    let scrub_failed = credentials::scrub_process(&[
        args.token.as_deref().unwrap_or(""),
        token_file.as_deref().unwrap_or(""),
    ]);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCALABLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(scalable_common::terminal::stderr_colour())
        .init();
    for why in scrub_failed {
        tracing::warn!("{why}");
    }
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => return fail(ExitCode::BadInput, e),
    };
    run(cfg, args.workdir.is_none())
}

/// Everything the agent was told and found, in the order the checks must run:
/// the flags first, then detection (nvidia-smi, runtimes) before the orphan
/// guard and the executor, whose reaper would race any child spawned after.
fn config(args: &Args) -> Result<AgentConfig, String> {
    let (broker, token, fingerprint) = broker_access(args)?;
    let flags = parse_flags(args)?;
    let host = detect_host(args, &flags)?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{hostname}-{}", std::process::id()));
    let workdir = args.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("scalable-agent-{}", std::process::id()))
    });
    std::fs::create_dir_all(&workdir)
        .map_err(|e| format!("cannot create the work dir {}: {e}", workdir.display()))?;
    let event_log = match &args.event_log {
        Some(p) => Some(std::sync::Arc::new(
            EventLog::open(p).map_err(|e| format!("--event-log: cannot open {e}"))?,
        )),
        None => None,
    };
    let mut tags = args.tags.clone();
    tags.retain(|t| !t.trim().is_empty());
    log_startup(args, &name, &tags, &flags, &host);
    // Before the executor: its reaper would otherwise race this spawn.
    let guard = match orphan_guard::OrphanGuard::start() {
        Ok(g) => Some(std::sync::Arc::new(g)),
        Err(e) => {
            tracing::warn!("no orphan guard ({e}); tasks may outlive a SIGKILLed agent");
            None
        }
    };
    let cfg = AgentConfig {
        broker,
        fingerprint,
        token,
        name,
        hostname,
        resources: host.detected.resources,
        tags,
        idle_timeout: flags.idle_timeout,
        lifetime: flags.lifetime,
        workdir,
        noop: args.noop,
        connect_timeout: flags.connect_timeout,
        reconnect_max: flags.reconnect_max,
        orphan_guard: guard,
        memory_margin: flags.memory_margin,
        limits: host.limit_mode,
        runtimes: host.runtimes,
        gpu_ids: host.gpu.ids,
        cpu_binding: host.cpu_binding,
        event_log,
        // Test hook (fault F13): every result is sent twice. Env only, no flag.
        test_duplicate_results: std::env::var(session::TEST_DUPLICATE_RESULTS_ENV)
            .is_ok_and(|v| v == "1"),
        no_shared_fs: args.no_shared_fs,
        storage: storage(args)?,
    };
    if cfg.test_duplicate_results {
        tracing::warn!(
            "test hook {}=1: every result is sent twice",
            session::TEST_DUPLICATE_RESULTS_ENV
        );
    }
    Ok(cfg)
}

/// The broker's address, the agent token and the broker's fingerprint: from the
/// flags, else from the token file.
fn broker_access(args: &Args) -> Result<(String, String, [u8; 32]), String> {
    let from_file = match &args.token_file {
        Some(p) => {
            if let Some(warning) = credentials::check_token_file(p) {
                tracing::warn!("{warning}");
            }
            Some(AgentTokenFile::load(p).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let broker = args
        .connect
        .clone()
        .or_else(|| from_file.as_ref().map(|t| t.address.clone()));
    let token = args
        .token
        .clone()
        .or_else(|| from_file.as_ref().map(|t| t.token.clone()));
    let fingerprint = args
        .fingerprint
        .clone()
        .or_else(|| from_file.as_ref().map(|t| t.fingerprint.clone()));
    let (Some(broker), Some(token), Some(fingerprint)) = (broker, token, fingerprint) else {
        return Err("need the broker address, token and fingerprint (hint: --token-file .scalable/agent.token, or -c HOST:PORT --token T --fingerprint FP)".into());
    };
    let fingerprint = scalable_common::tls::parse_fingerprint(&fingerprint)
        .map_err(|e| format!("--fingerprint: {e}"))?;
    Ok((broker, token, fingerprint))
}

/// The flags that take values, each checked with an error that names it.
fn parse_flags(args: &Args) -> Result<Flags, String> {
    let cpus = auto_or(&args.cpus, "cpus", |s| {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| "expected a positive whole number or auto".to_string())
    })?;
    let memory = auto_or(&args.memory, "memory", |s| {
        parse_size_bytes(s).map_err(|e| e.to_string())
    })?;
    let gpus = auto_or(&args.gpus, "gpus", |s| {
        s.parse::<u32>()
            .map_err(|_| "expected a whole number or auto".to_string())
    })?;
    let runtime: RuntimeFlag = args
        .runtime
        .parse()
        .map_err(|e| format!("--runtime {:?}: {e}", args.runtime))?;
    let memory_margin = args
        .memory_margin
        .parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m >= 1.0)
        .ok_or_else(|| {
            format!(
                "--memory-margin {:?}: expected a number of at least 1 (e.g. 1.2)",
                args.memory_margin
            )
        })?;
    let dur = |v: &Option<String>, what: &str| -> Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| {
                parse_duration_ms(s)
                    .map(Duration::from_millis)
                    .map_err(|e| format!("--{what}: {e}"))
            })
            .transpose()
    };
    let idle_timeout = dur(&args.idle_timeout, "idle-timeout")?;
    let lifetime = dur(&args.lifetime, "lifetime")?;
    let connect_timeout =
        dur(&Some(args.connect_timeout.clone()), "connect-timeout")?.unwrap_or_default();
    let reconnect_max = dur(&Some(args.reconnect_max.clone()), "reconnect-max")?
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "--reconnect-max {:?}: expected a duration above zero (e.g. 10s)",
                args.reconnect_max
            )
        })?;
    Ok(Flags {
        cpus,
        memory,
        gpus,
        runtime,
        memory_margin,
        idle_timeout,
        lifetime,
        connect_timeout,
        reconnect_max,
    })
}

/// GPUs, container runtimes, resources, memory-limit mode and cores to bind.
/// Before the orphan guard and the executor: this may run nvidia-smi, and the
/// executor's reaper would race any child spawned after it exists.
fn detect_host(args: &Args, flags: &Flags) -> Result<Host, String> {
    let path = std::env::var_os("PATH");
    let gpu = gpus::detect(
        flags.gpus.map_or(GpuFlag::Auto, GpuFlag::Count),
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        path.as_deref(),
    );
    if let Some(note) = &gpu.note {
        tracing::warn!("no GPUs from nvidia-smi: {note}");
    }
    let runtimes = runtime::detect(flags.runtime, path.as_deref(), |k| std::env::var(k).ok())
        .map_err(|e| format!("--runtime {}: {e}", args.runtime))?;
    let mut detected = resources::detect(flags.cpus, flags.memory, Some(gpu.ids.len() as u32));
    detected.resources.custom = parse_custom(&args.resources)?;
    let (limit_mode, limit_why) = limits::detect();
    let cpu_binding = match cpuset::own_cpus()
        .map_err(|e| format!("cannot read the agent's cpu affinity: {e}"))
        .and_then(|own| CpuPool::plan(&own, detected.resources.cpus))
    {
        Ok(pool) => Some(pool),
        Err(why) => {
            tracing::info!("tasks are not bound to cores: {why}");
            None
        }
    };
    Ok(Host {
        gpu,
        runtimes,
        detected,
        limit_mode,
        limit_why,
        cpu_binding,
    })
}

/// The two lines that say what this agent is and offers.
fn log_startup(args: &Args, name: &str, tags: &[String], flags: &Flags, host: &Host) {
    tracing::info!(
        "agent {name} (scalable-agent {}): {} ({}), tags [{}]{}",
        scalable_common::handshake::version_text(),
        host.detected.resources,
        host.detected.source,
        tags.join(","),
        if args.noop {
            ", NOOP benchmark mode"
        } else {
            ""
        }
    );
    tracing::info!(
        "gpus [{}] ({}); container runtimes [{}]; memory limits: {} ({}), margin {}; cpu binding: {}",
        host.gpu.ids.join(","),
        host.gpu.source,
        host.runtimes
            .iter()
            .map(|r| r.kind.name())
            .collect::<Vec<_>>()
            .join(","),
        host.limit_mode.name(),
        host.limit_why,
        flags.memory_margin,
        host.cpu_binding
            .as_ref()
            .map_or("off".to_string(), |p| format!("{} cores", p.total())),
    );
}

/// Runs the session on a current-thread runtime until the agent leaves, then
/// cleans up a work dir it made itself (`own_workdir`).
fn run(cfg: AgentConfig, own_workdir: bool) -> std::process::ExitCode {
    let workdir = cfg.workdir.clone();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                ExitCode::Failed,
                format!("cannot start the async runtime: {e}"),
            )
        }
    };
    let exit = rt.block_on(session::run(cfg));
    // Do not wait for idle runtime threads (e.g. a DNS lookup's): the SIGTERM
    // deadline (SPEC §6) counts until the process is gone.
    rt.shutdown_timeout(Duration::from_millis(100));
    if own_workdir {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    match exit {
        Exit::Done(why) => {
            tracing::info!("agent leaving: {why}");
            ExitCode::Ok.into()
        }
        Exit::Refused(m) | Exit::Unreachable(m) => fail(ExitCode::Unreachable, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_has_help_text() {
        use clap::CommandFactory;
        let cmd = Args::command();
        let missing: Vec<_> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|a| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn reconnect_max_defaults_to_the_session_default() {
        let args = Args::try_parse_from(["scalable-agent"]).expect("parses");
        if std::env::var_os("SCALABLE_RECONNECT_MAX").is_none() {
            assert_eq!(
                parse_duration_ms(&args.reconnect_max).map(Duration::from_millis),
                Ok(session::RECONNECT_BACKOFF_MAX_DEFAULT)
            );
        }
    }
}
