//! `scalable-broker`: holds workflows and state, serves agents and the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use scalable_broker::core::CoreConfig;
use scalable_broker::server::{self, BrokerConfig};
use scalable_common::exit::ExitCode;
use scalable_common::input_file::read_input_file;
use scalable_common::manifest::{
    load_manifest, process_env, LoadOptions, Provider, MANIFEST_TEXT_BYTES_MAX,
};

#[derive(Parser, Debug)]
#[command(
    name = "scalable-broker",
    version = scalable_common::handshake::version_text(),
    about = "The Scalable broker"
)]
struct Args {
    /// State directory (certificate, tokens, access.json, database).
    #[arg(long, env = "SCALABLE_STATE_DIR", default_value = ".scalable")]
    state_dir: PathBuf,
    /// UDP address to serve QUIC on.
    #[arg(long, env = "SCALABLE_LISTEN", default_value = "0.0.0.0:7420")]
    listen: SocketAddr,
    /// Host name agents and the CLI use to reach this broker.
    #[arg(long, env = "SCALABLE_ADVERTISE")]
    advertise: Option<String>,
    /// Start this many local agents (a laptop needs nothing else).
    #[arg(long, env = "SCALABLE_LOCAL_AGENTS", default_value_t = 0)]
    local_agents: u32,
    /// Cpus of each local agent (default: the host's cpus divided among them).
    #[arg(long)]
    local_agent_cpus: Option<u32>,
    /// Extra arguments for each local agent (e.g. --local-agent-arg=--noop).
    #[arg(long = "local-agent-arg", allow_hyphen_values = true)]
    local_agent_args: Vec<String>,
    /// The scalable-agent binary for local agents.
    #[arg(long, env = "SCALABLE_AGENT_EXE")]
    agent_exe: Option<PathBuf>,
    /// The manifest (scalable.yaml); with --target local it starts the target's agents.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The manifest target whose agents this broker starts.
    #[arg(long)]
    target: Option<String>,
    /// Run the adaptive scaler for --target even without an `adaptive:`
    /// block (then from 0 up to its max_workers); a target with one is
    /// scaled without this flag.
    #[arg(long)]
    adaptive: bool,
    /// Manifest overlays to apply, in order (repeatable).
    #[arg(long = "overlay")]
    overlays: Vec<String>,
    /// Seconds without a heartbeat before an agent is declared lost.
    #[arg(long, default_value_t = 20)]
    heartbeat_timeout: u64,
    /// Milliseconds between heartbeats (agents and broker both send them).
    #[arg(long, default_value_t = 5_000)]
    heartbeat_interval_ms: u64,
    /// Seconds agents get after a broker restart to come back and claim the
    /// attempts they kept running (default: heartbeat timeout + 10 s, the
    /// agents' longest reconnect backoff).
    #[arg(long)]
    reclaim_window: Option<u64>,
    /// Times a task may be lost with its agent (started) before it fails.
    #[arg(long, default_value_t = 5)]
    crash_limit: u16,
    /// Milliseconds a job may wait while others take the room it needs before
    /// it reserves an agent (anti-starvation).
    #[arg(long, default_value_t = 2_000)]
    reserve_after_ms: u64,
    /// Keep the detail of finished runs (usage series, log tails, argv) this
    /// long, e.g. 90d; their numbers (times, peaks, cpu, I/O) stay (default: forever).
    #[arg(long, value_name = "DURATION", value_parser = parse_keep)]
    telemetry_keep: Option<u64>,
}

/// `--telemetry-keep`: a duration as the manifest writes them (`90d`, `12h`).
fn parse_keep(text: &str) -> Result<u64, String> {
    scalable_common::units::parse_duration_ms(text).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    scalable_common::panic::install_bug_hook();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCALABLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(scalable_common::terminal::stderr_colour())
        .init();
    let mut local_agents = args.local_agents;
    let mut local_agent_cpus = args.local_agent_cpus;
    let mut local_agent_args = args.local_agent_args.clone();
    let mut manifest = None;
    let mut adaptive = false;
    if let Some(path) = &args.manifest {
        let shown = path.display().to_string();
        let text = match read_input_file(path, MANIFEST_TEXT_BYTES_MAX) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {shown}: {e}");
                return ExitCode::BadInput.into();
            }
        };
        let opts = LoadOptions {
            target: args.target.as_deref(),
            overlays: &args.overlays,
            env: &process_env,
        };
        let m = match load_manifest(&shown, &text, &opts) {
            Ok(m) => m,
            Err(errs) => {
                for e in &errs.0 {
                    eprintln!("error: {e}");
                }
                return ExitCode::BadInput.into();
            }
        };
        if let Some(t) = args.target.as_deref().and_then(|t| m.target(t)) {
            adaptive = args.adaptive || t.adaptive.is_some();
            match &t.provider {
                // The scaler starts this target's agents as pilots.
                Provider::Local { .. } if adaptive => local_agents = 0,
                Provider::Local {
                    threads_per_worker, ..
                } => {
                    local_agents = t.max_workers;
                    local_agent_cpus = local_agent_cpus.or(*threads_per_worker);
                    if !t.tags.is_empty() {
                        local_agent_args.push(format!("--tags={}", t.tags.join(",")));
                    }
                }
                _ if adaptive => {}
                other => eprintln!(
                    "note: target {} uses provider {}; this broker does not start its pilots yet (scalable render {shown} --target {} prints what to submit)",
                    t.name,
                    other.name(),
                    t.name
                ),
            }
        }
        manifest = Some(std::sync::Arc::new(m));
    } else if args.adaptive {
        eprintln!("error: --adaptive needs --manifest FILE --target T (the target whose pilots it scales)");
        return ExitCode::BadInput.into();
    } else if args.target.is_some() {
        eprintln!("error: --target needs --manifest FILE");
        return ExitCode::BadInput.into();
    }
    let local_agent_cpus = local_agent_cpus.or_else(|| {
        (local_agents > 0).then(|| {
            let host = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            (host / local_agents).max(1)
        })
    });
    let cfg = BrokerConfig {
        state_dir: args.state_dir,
        listen: args.listen,
        advertise_host: args.advertise,
        local_agents,
        local_agent_cpus,
        local_agent_args,
        agent_exe: args.agent_exe,
        core: CoreConfig {
            heartbeat_timeout_ms: args.heartbeat_timeout * 1000,
            heartbeat_interval_ms: args.heartbeat_interval_ms.max(100),
            reclaim_window_ms: args
                .reclaim_window
                .map_or(args.heartbeat_timeout * 1000 + 10_000, |s| s * 1000),
            crash_limit: args.crash_limit.max(1),
            reserve_after_ms: args.reserve_after_ms,
            ..CoreConfig::default()
        },
        manifest,
        target: args.target.clone(),
        adaptive,
        telemetry_keep_ms: args.telemetry_keep,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Failed.into();
        }
    };
    match rt.block_on(server::run(cfg)) {
        Ok(()) => ExitCode::Ok.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::Failed.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_option_has_help_text() {
        let missing = scalable_broker::cli::args_without_help(&super::Args::command());
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
