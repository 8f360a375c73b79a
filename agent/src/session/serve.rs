//! The event loop of one connection: results from the executor, messages from
//! the broker, heartbeats, the silence timer, SIGTERM, and after each wake the
//! batching of results and the progress of a drain.
//!
//! Owns: the loop and the reader task of one connection. It must not block (one
//! thread serves everything) and must not lose a result: what is unacknowledged
//! when the connection goes is resent after the reconnect.

use std::time::{Duration, Instant};

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{AttemptEnd, AttemptId, FromAgent, ToAgent, MESSAGE_BYTES_MAX};
use tokio::sync::mpsc;

use super::batch::{flush, FLUSH_DELAY, FLUSH_EARLY_EVENTS};
use super::connect::Conn;
use super::drain::{start_drain, DRAIN_WAIT_MAX, LEAVE_FLUSH_WAIT_MAX};
use super::silence::{silence_check, Silence};
use super::work::{apply_exec_event, Work};
use super::AgentConfig;
use crate::executor::{ExecEvent, Executor};

pub(super) enum Served {
    Leave(String),
    Lost(String),
}

pub(super) async fn serve(
    cfg: &AgentConfig,
    exec: &Executor,
    work: &mut Work,
    c: Conn,
    ev_rx: &mut mpsc::UnboundedReceiver<ExecEvent>,
    sigterm: &mut tokio::signal::unix::Signal,
    born: Instant,
) -> Served {
    let Conn {
        conn,
        mut send,
        mut recv,
        heartbeat,
        silence_max,
        ..
    } = c;
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Result<ToAgent, String>>();
    // Reading on its own task keeps a half-read frame safe from `select!` cancellation.
    let reader = tokio::spawn(async move {
        loop {
            match read_frame::<_, ToAgent>(&mut recv, MESSAGE_BYTES_MAX).await {
                Ok(Some(m)) => {
                    if in_tx.send(Ok(m)).is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    let _ = in_tx.send(Err("the broker closed the connection".into()));
                    break;
                }
                Err(e) => {
                    let _ = in_tx.send(Err(e.to_string()));
                    break;
                }
            }
        }
    });
    let mut hb = tokio::time::interval(heartbeat);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining: Option<String> = None;
    let mut flush_due: Option<tokio::time::Instant> = None;
    let mut drain_started: Option<Instant> = None;
    // Wakes the loop when the drain's time is up, even if nothing else happens.
    let mut drain_due: Option<tokio::time::Instant> = None;
    let mut leaving_told = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut silence_due = last_heard + silence_max.unwrap_or(Duration::ZERO);
    let silence = tokio::time::sleep_until(silence_due);
    tokio::pin!(silence);
    let outcome = loop {
        tokio::select! {
            biased;
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break Served::Leave("executor stopped".into()) };
                apply_exec_event(work, ev);
                while let Ok(ev) = ev_rx.try_recv() {
                    apply_exec_event(work, ev);
                }
                if draining.is_none() {
                    work.start_what_fits(exec, cfg.noop);
                }
            }
            msg = in_rx.recv() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Served::Lost(e),
                    None => break Served::Lost("connection reader stopped".into()),
                };
                last_heard = tokio::time::Instant::now();
                match msg {
                    ToAgent::Assign(list) => {
                        if draining.is_some() {
                            let ids: Vec<AttemptId> = list.iter().map(|a| a.attempt).collect();
                            work.queue.extend(list);
                            work.drop_queued(&ids, &AttemptEnd::Drained);
                        } else {
                            work.queue.extend(list);
                            work.start_what_fits(exec, cfg.noop);
                        }
                    }
                    ToAgent::Ack { counted, ignored } => {
                        work.acked(&counted, &ignored, cfg.event_log.as_deref());
                    }
                    ToAgent::Heartbeat => {}
                    ToAgent::Cancel(ids) => {
                        for id in work.drop_queued(&ids, &AttemptEnd::Cancelled) {
                            if work.running.contains_key(&id) {
                                exec.stop(id, AttemptEnd::Cancelled);
                            }
                        }
                    }
                    ToAgent::Return(ids) => {
                        work.drop_queued(&ids, &AttemptEnd::Returned);
                    }
                    ToAgent::Shutdown { reason } => {
                        start_drain(work, exec, &mut draining, format!("broker asked: {reason}"));
                    }
                }
            }
            _ = hb.tick() => {
                let msg = FromAgent::Heartbeat {
                    running: work.running.len() as u32,
                    queued: work.queue.len() as u32,
                };
                if let Err(e) = write_frame(&mut send, &msg).await {
                    break Served::Lost(e.to_string());
                }
                if draining.is_none() {
                    if let Some(limit) = cfg.idle_timeout {
                        if work.idle() && work.last_busy.elapsed() >= limit {
                            start_drain(work, exec, &mut draining, format!("idle for {limit:?}"));
                        }
                    }
                    if let Some(life) = cfg.lifetime {
                        if born.elapsed() >= life {
                            start_drain(work, exec, &mut draining, "lifetime reached".into());
                        }
                    }
                }
            }
            _ = sigterm.recv() => {
                start_drain(work, exec, &mut draining, "SIGTERM".into());
            }
            _ = sleep_until_due(flush_due) => {}
            _ = sleep_until_due(drain_due) => {}
            _ = &mut silence, if silence_max.is_some() => {
                let limit = silence_max.unwrap_or_default();
                // Let the connection's tasks hand over what already arrived.
                tokio::task::yield_now().await;
                let now = tokio::time::Instant::now();
                match silence_check(last_heard, silence_due, now, limit, !in_rx.is_empty()) {
                    Silence::Lost(quiet) => {
                        break Served::Lost(format!(
                            "broker silent for {:.1}s (limit {limit:?})",
                            quiet.as_secs_f64()
                        ));
                    }
                    Silence::Stalled => {
                        tracing::warn!(
                            "the agent was stalled for {:?}; giving the broker a fresh {limit:?}",
                            now - silence_due
                        );
                        last_heard = now;
                        silence_due = now + limit;
                    }
                    Silence::RecheckAt(at) => silence_due = at,
                }
                silence.as_mut().reset(silence_due);
            }
        }
        // Coalesce: results go out at most FLUSH_DELAY after the first of them, or
        // at once when many wait or the agent is leaving. The broker's prefetched
        // queue covers the delay, and fewer, larger messages save both sides cpu.
        work.release_suspects(Instant::now());
        let pending = work.out_started.len() + work.out_finished.len();
        if pending == 0 {
            // Wake for the first held-back result, if any.
            flush_due = work
                .suspects
                .iter()
                .map(|(_, due)| tokio::time::Instant::from_std(*due))
                .min();
        }
        if pending > 0 {
            let due = *flush_due.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_DELAY);
            if pending >= FLUSH_EARLY_EVENTS
                || draining.is_some()
                || tokio::time::Instant::now() >= due
            {
                let log = cfg.event_log.as_deref();
                if let Err(e) = flush(&mut send, work, log, cfg.test_duplicate_results).await {
                    break Served::Lost(e);
                }
                flush_due = None;
            }
        }
        if let Some(why) = &draining {
            // Tell the broker at once so it assigns nothing more (SPEC §6 drain).
            let started = *drain_started.get_or_insert_with(|| {
                leaving_told = false;
                drain_due = Some(tokio::time::Instant::now() + DRAIN_WAIT_MAX);
                Instant::now()
            });
            if !leaving_told {
                let msg = FromAgent::Leaving {
                    reason: why.clone(),
                };
                if let Err(e) = write_frame(&mut send, &msg).await {
                    break Served::Lost(e.to_string());
                }
                leaving_told = true;
            }
            let done = work.running.is_empty() && work.unacked.is_empty();
            if done || started.elapsed() >= DRAIN_WAIT_MAX {
                if !work.running.is_empty() {
                    tracing::warn!(
                        "{} attempts still running after {DRAIN_WAIT_MAX:?} of draining; killing them",
                        work.running.len()
                    );
                }
                break Served::Leave(why.clone());
            }
        }
    };
    if let Served::Leave(why) = &outcome {
        let _ = write_frame(
            &mut send,
            &FromAgent::Leaving {
                reason: why.clone(),
            },
        )
        .await;
        let _ = send.finish();
        let _ = tokio::time::timeout(LEAVE_FLUSH_WAIT_MAX, send.stopped()).await;
        conn.close(0u32.into(), b"agent leaving");
    }
    reader.abort();
    match (outcome, draining) {
        // A draining agent does not reconnect: it was leaving anyway, and the
        // SIGTERM deadline does not wait for a broker to come back.
        (Served::Lost(e), Some(why)) => {
            Served::Leave(format!("{why} (lost the broker while draining: {e})"))
        }
        (outcome, _) => outcome,
    }
}

/// Resolves at `due`, or never when nothing waits to be flushed.
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
