//! The agent's life across connections: the executor it keeps for its whole
//! life, connecting, serving, and reconnecting with a capped backoff when the
//! broker goes away, until it leaves.
//!
//! Owns: [`run`], the backoff and when to give up. It must not handle messages
//! (that is `serve`) and keeps collecting results of running tasks while away,
//! so nothing is lost across a reconnect.

use std::time::{Duration, Instant};

use scalable_common::protocol::AgentId;
use tokio::sync::mpsc;

use super::connect::{connect, ConnectError};
use super::serve::{serve, Served};
use super::work::{apply_exec_event, Work};
use super::{AgentConfig, Exit};
use crate::executor::{ExecConfig, Executor};

/// Reconnect backoff: the first wait, and the default cap (`--reconnect-max`).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(10);

/// Runs the agent until it leaves. Reconnects when the broker goes away.
pub async fn run(cfg: AgentConfig) -> Exit {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let exec = match Executor::new(
        ExecConfig {
            log_dir: cfg.workdir.clone(),
            tail_bytes: 64 << 10,
            output_bytes_max: 256 << 20,
            kill_grace: Duration::from_secs(5),
            orphan_guard: cfg.orphan_guard.clone(),
            memory_margin: cfg.memory_margin,
            limits: cfg.limits.clone(),
            runtime: cfg.runtimes.first().cloned(),
            event_log: cfg.event_log.clone(),
        },
        ev_tx,
    ) {
        Ok(e) => e,
        Err(e) => {
            return Exit::Done(format!(
                "cannot set up the executor in {}: {e}",
                cfg.workdir.display()
            ))
        }
    };
    let mut work = Work::new(
        cfg.resources.clone(),
        cfg.gpu_ids.clone(),
        cfg.cpu_binding.clone(),
    );
    let born = Instant::now();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => return Exit::Done(format!("cannot install the SIGTERM handler: {e}")),
    };
    let backoff_min = RECONNECT_BACKOFF_MIN.min(cfg.reconnect_max);
    let mut backoff = backoff_min;
    let mut first_failure: Option<Instant> = None;
    let mut ever_connected = false;
    // The id of the last Welcome: sent back so the broker resumes this agent.
    let mut agent_id: Option<AgentId> = None;
    let exit = loop {
        let connected = tokio::select! {
            c = connect(&cfg, &work, born, agent_id) => c,
            _ = sigterm.recv() => break Exit::Done("SIGTERM while connecting".into()),
        };
        let conn = match connected {
            Ok(c) => c,
            Err(ConnectError::Refused(m)) => break Exit::Refused(m),
            Err(ConnectError::Retry(m)) => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                if since.elapsed() > cfg.connect_timeout {
                    break Exit::Unreachable(m);
                }
                if !ever_connected {
                    tracing::info!("{m}; retrying in {backoff:?}");
                } else {
                    tracing::warn!("{m}; retrying in {backoff:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = sigterm.recv() => break Exit::Done("SIGTERM while disconnected".into()),
                }
                backoff = (backoff * 2).min(cfg.reconnect_max);
                // Keep collecting results of running tasks while away.
                while let Ok(ev) = ev_rx.try_recv() {
                    apply_exec_event(&mut work, ev);
                }
                continue;
            }
        };
        ever_connected = true;
        first_failure = None;
        backoff = backoff_min;
        agent_id = Some(conn.agent_id);
        match serve(&cfg, &exec, &mut work, conn, &mut ev_rx, &mut sigterm, born).await {
            Served::Leave(why) => break Exit::Done(why),
            Served::Lost(why) => {
                tracing::warn!("lost the broker: {why}; reconnecting");
                // Results go out again after reconnecting; the broker dedupes.
                work.out_finished = work.unacked.values().map(|u| u.result.clone()).collect();
                continue;
            }
        }
    };
    exec.kill_all_now();
    exit
}
