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
use super::stage_flow::StageFlow;
use super::work::Work;
use super::{AgentConfig, Exit};
use crate::executor::{ExecConfig, ExecEvent, Executor};

/// Reconnect backoff: the first wait, and the default cap (`--reconnect-max`).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(10);

/// Runs the agent until it leaves. Reconnects when the broker goes away.
pub async fn run(cfg: AgentConfig) -> Exit {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let exec = match new_executor(&cfg, ev_tx) {
        Ok(e) => e,
        Err(exit) => return exit,
    };
    let mut work = Work::new(
        cfg.resources.clone(),
        cfg.gpu_ids.clone(),
        cfg.cpu_binding.clone(),
    );
    work.chaining = !cfg.no_shared_fs;
    let (mut flow, mut stage_rx) = StageFlow::new(
        cfg.no_shared_fs,
        cfg.workdir.clone(),
        cfg.storage.clone(),
        cfg.event_log.clone(),
    );
    let born = Instant::now();
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => return Exit::Done(format!("cannot install the SIGTERM handler: {e}")),
    };
    let mut backoff = Backoff::new(cfg.reconnect_max);
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
                let wait = match backoff.failed(m, cfg.connect_timeout) {
                    Ok(wait) => wait,
                    Err(exit) => break exit,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = sigterm.recv() => break Exit::Done("SIGTERM while disconnected".into()),
                }
                // Keep collecting results of running tasks while away.
                while let Ok(ev) = ev_rx.try_recv() {
                    flow.route_exec_event(ev, &mut work);
                }
                while let Ok(ev) = stage_rx.try_recv() {
                    if let Some(a) = flow.on_event(ev, &mut work) {
                        work.queue.push_back(a);
                    }
                }
                continue;
            }
        };
        backoff.connected();
        agent_id = Some(conn.agent_id);
        flow.set_conn(Some(conn.conn.clone()));
        let channels = (&mut ev_rx, &mut stage_rx);
        let held = (&mut work, &mut flow);
        let served = serve(&cfg, &exec, held, conn, channels, &mut sigterm, born).await;
        flow.set_conn(None);
        match served {
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

/// The executor the agent keeps for its whole life, its files in the workdir.
fn new_executor(
    cfg: &AgentConfig,
    ev_tx: mpsc::UnboundedSender<ExecEvent>,
) -> Result<Executor, Exit> {
    Executor::new(
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
    )
    .map_err(|e| {
        Exit::Done(format!(
            "cannot set up the executor in {}: {e}",
            cfg.workdir.display()
        ))
    })
}

/// The wait between connection tries: from `RECONNECT_BACKOFF_MIN` doubling up
/// to `--reconnect-max`, back to the minimum once connected; the agent gives up
/// after `--connect-timeout` of failures in a row.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    first_failure: Option<Instant>,
    ever_connected: bool,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        let min = RECONNECT_BACKOFF_MIN.min(max);
        Backoff {
            min,
            max,
            next: min,
            first_failure: None,
            ever_connected: false,
        }
    }

    /// A try failed with `m`: how long to wait before the next, or the agent's
    /// exit once the failures have lasted longer than `timeout`.
    fn failed(&mut self, m: String, timeout: Duration) -> Result<Duration, Exit> {
        let since = *self.first_failure.get_or_insert_with(Instant::now);
        if since.elapsed() > timeout {
            return Err(Exit::Unreachable(m));
        }
        let wait = self.next;
        // Quiet before the first connection (the broker may still be starting).
        if !self.ever_connected {
            tracing::info!("{m}; retrying in {wait:?}");
        } else {
            tracing::warn!("{m}; retrying in {wait:?}");
        }
        self.next = (wait * 2).min(self.max);
        Ok(wait)
    }

    fn connected(&mut self) {
        self.ever_connected = true;
        self.first_failure = None;
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_once_connected() {
        let hour = Duration::from_secs(3600);
        let mut b = Backoff::new(Duration::from_secs(1));
        let waits: Vec<Duration> = (0..5)
            .map(|_| b.failed("down".into(), hour).expect("within the timeout"))
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        b.connected();
        assert_eq!(b.failed("down".into(), hour).ok(), Some(ms(200)));
        // A cap below the minimum wins.
        let mut tight = Backoff::new(ms(50));
        assert_eq!(tight.failed("down".into(), hour).ok(), Some(ms(50)));
        assert_eq!(tight.failed("down".into(), hour).ok(), Some(ms(50)));
    }

    #[test]
    fn backoff_gives_up_after_the_connect_timeout() {
        let mut b = Backoff::new(Duration::from_secs(1));
        assert!(b.failed("down".into(), Duration::from_secs(3600)).is_ok());
        std::thread::sleep(Duration::from_millis(5));
        match b.failed("down".into(), Duration::from_millis(1)) {
            Err(Exit::Unreachable(m)) => assert_eq!(m, "down"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
