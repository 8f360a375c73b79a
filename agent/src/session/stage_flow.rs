//! When an agent without a shared filesystem stages (`--no-shared-fs`): an
//! assignment is moved to its private directory and queued only once its
//! inputs are fetched; a successful attempt's result is held until its
//! outputs are handed back, then reported as usual. Transfers run on tasks
//! of their own, so the control stream never waits for them.
//!
//! Owns: the attempts being staged in or out and their private directories;
//! the connection staging uses (`set_conn`). It must not send on the control
//! stream; it hands the loop what became ready or ended ([`StagingEvent`]).
//! Invariant: an attempt being staged is in `Work::transferring` (staging
//! in) or `Work::running` (staging out), so a reconnect's hello holds it.

use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Arc;

use scalable_common::object_store::ObjectStore;
use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult};
use scalable_common::staging::{Moved, StageRequest, Transfers};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::unix_us;
use super::work::{apply_exec_event, Work};
use crate::event_log::EventLog;
use crate::executor::ExecEvent;
use crate::log_event;
use crate::staging::checkpoint::{self, graceful, snapshot_root, Restored, Watcher};
use crate::staging::transfer::Link;
use crate::staging::{private_dir, stage_in, stage_out};

/// A staging task's outcome, for the session's loop.
pub(super) enum StagingEvent {
    /// Inputs and the kept checkpoint fetched, or the end of an attempt that
    /// cannot start.
    In(Box<Assignment>, Result<StagedIn, AttemptEnd>),
    /// Outputs handed back, or why not (the result then ends that way).
    Out(Box<AttemptResult>, Result<Moved, AttemptEnd>),
    /// The last checkpoint upload is done (no outputs to hand back).
    Settled(Box<AttemptResult>),
}

/// What staging in fetched: inputs (bytes, ms) and the checkpoint.
pub(super) struct StagedIn {
    moved: (u64, u64),
    checkpoint: Restored,
}

/// An attempt that runs in its private directory.
struct Private {
    dir: PathBuf,
    outputs: Vec<String>,
    moved_in: (u64, u64),
    /// Its checkpoint paths' poller (a job with `checkpoint:`).
    watcher: Option<Watcher>,
    /// What moved so far: in, and the checkpoint's restore.
    transfers: Transfers,
}

/// The staging state of one agent, kept across its connections.
pub(super) struct StageFlow {
    enabled: bool,
    workdir: PathBuf,
    conn_tx: watch::Sender<Option<quinn::Connection>>,
    ev_tx: mpsc::UnboundedSender<StagingEvent>,
    staging_in: FxHashMap<AttemptId, JoinHandle<()>>,
    /// `--storage`: files move through this object store (`staging::s3`).
    storage: Option<Arc<ObjectStore>>,
    private: FxHashMap<AttemptId, Private>,
    log: Option<Arc<EventLog>>,
}

impl StageFlow {
    /// `enabled`: the agent runs with `--no-shared-fs`.
    pub(super) fn new(
        enabled: bool,
        workdir: PathBuf,
        storage: Option<Arc<ObjectStore>>,
        log: Option<Arc<EventLog>>,
    ) -> (StageFlow, mpsc::UnboundedReceiver<StagingEvent>) {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (conn_tx, _) = watch::channel(None);
        let flow = StageFlow {
            enabled,
            workdir,
            conn_tx,
            ev_tx,
            staging_in: FxHashMap::default(),
            storage,
            private: FxHashMap::default(),
            log,
        };
        (flow, ev_rx)
    }

    /// The connection transfers use now (`None` while the broker is away).
    pub(super) fn set_conn(&self, conn: Option<quinn::Connection>) {
        self.conn_tx.send_replace(conn);
    }

    /// A client for other parts of the agent that move files (checkpoints).
    pub(super) fn link(&self) -> Link {
        Link::new(self.conn_tx.subscribe())
    }

    /// New assignments: staged in first when staging is on (returns none of
    /// them), else returned to be queued as they are.
    pub(super) fn take(&mut self, list: Vec<Assignment>, work: &mut Work) -> Vec<Assignment> {
        if !self.enabled {
            return list;
        }
        for mut a in list {
            let id = a.attempt;
            if self.private.contains_key(&id) || work.running.contains_key(&id) {
                continue; // resent after a reconnect: already ours
            }
            let dir = private_dir(&self.workdir, id);
            a.cwd = dir.to_string_lossy().into_owned();
            self.private.insert(
                id,
                Private {
                    dir: dir.clone(),
                    outputs: a.outputs.clone(),
                    moved_in: (0, 0),
                    watcher: None,
                    transfers: Transfers::default(),
                },
            );
            work.transferring.insert(id);
            let (link, tx, os) = (self.link(), self.ev_tx.clone(), self.storage.clone());
            let task = tokio::spawn(async move {
                let done = match stage_in(link.clone(), os, id, &a.inputs, &a.outputs, &dir).await {
                    Ok(moved) => checkpoint::restore(link, id, &dir)
                        .await
                        .map(|checkpoint| StagedIn { moved, checkpoint }),
                    Err(end) => Err(end),
                };
                let _ = tx.send(StagingEvent::In(Box::new(a), done));
            });
            self.staging_in.insert(id, task);
        }
        Vec::new()
    }

    /// A staging task ended: the assignment to queue, if it may start now.
    pub(super) fn on_event(&mut self, ev: StagingEvent, work: &mut Work) -> Option<Assignment> {
        match ev {
            StagingEvent::In(a, done) => {
                let id = a.attempt;
                self.staging_in.remove(&id);
                if !work.transferring.remove(&id) {
                    return None; // cancelled meanwhile
                }
                match done {
                    Ok(StagedIn { moved, checkpoint }) => {
                        log_event!(self.log.as_deref(), "stage-in {id} {} {}", moved.0, moved.1);
                        if checkpoint.bytes > 0 {
                            log_event!(
                                self.log.as_deref(),
                                "checkpoint-in {id} {}",
                                checkpoint.bytes
                            );
                        }
                        if let Some(p) = self.private.get_mut(&id) {
                            p.moved_in = moved;
                            p.transfers.in_bytes = moved.0 + checkpoint.bytes;
                            p.transfers.in_ms = moved.1 + checkpoint.ms;
                            if !checkpoint.paths.is_empty() {
                                let link = Link::new(self.conn_tx.subscribe());
                                let dir = p.dir.clone();
                                let paths = checkpoint.paths;
                                p.watcher =
                                    Some(Watcher::start(link, id, dir, paths, &self.workdir));
                            }
                        }
                        Some(*a)
                    }
                    Err(end) => {
                        log_event!(self.log.as_deref(), "stage-in {id} failed");
                        work.finished(AttemptResult::bare(id, end, 0, unix_us()));
                        None
                    }
                }
            }
            StagingEvent::Out(mut r, done) => {
                match done {
                    Ok(m) => log_event!(
                        self.log.as_deref(),
                        "stage-out {} {} {}",
                        r.attempt,
                        m.out_bytes,
                        m.out_ms
                    ),
                    Err(end) => {
                        log_event!(self.log.as_deref(), "stage-out {} failed", r.attempt);
                        r.end = end;
                    }
                }
                work.finished(*r);
                None
            }
            StagingEvent::Settled(r) => {
                work.finished(*r);
                None
            }
        }
    }

    /// The executor's event: a success with outputs to hand back waits for
    /// them, and an attempt with a checkpoint for its last upload (the
    /// attempt stays running meanwhile); anything else applies at once.
    pub(super) fn route_exec_event(&mut self, ev: ExecEvent, work: &mut Work) {
        let ExecEvent::Finished(r) = ev else {
            return apply_exec_event(work, ev);
        };
        let Some(p) = self.private.get_mut(&r.attempt) else {
            return apply_exec_event(work, ExecEvent::Finished(r));
        };
        let out = r.end.is_success() && !p.outputs.is_empty();
        let watcher = p.watcher.take();
        let transfers = p.transfers;
        let (dir, outputs, moved_in) = (p.dir.clone(), p.outputs.clone(), p.moved_in);
        if !out && watcher.is_none() {
            self.report(r.attempt, transfers);
            return apply_exec_event(work, ExecEvent::Finished(r));
        }
        let (link, tx, log) = (self.link(), self.ev_tx.clone(), self.log.clone());
        let os = self.storage.clone();
        tokio::spawn(async move {
            let mut transfers = transfers;
            if let Some(w) = watcher {
                let up = w.finish(graceful(&r.end)).await;
                transfers.checkpoint_bytes = up.bytes;
                transfers.checkpoint_ms = up.ms;
                if up.snapshots > 0 {
                    log_event!(
                        log.as_deref(),
                        "checkpoint-out {} {} {}",
                        r.attempt,
                        up.snapshots,
                        up.bytes
                    );
                }
            }
            let ev = match out {
                true => {
                    let done =
                        stage_out(link.clone(), os, r.attempt, &dir, &outputs, moved_in).await;
                    if let Ok(m) = &done {
                        transfers.out_bytes = m.out_bytes;
                        transfers.out_ms = m.out_ms;
                    }
                    StagingEvent::Out(Box::new(r.clone()), done)
                }
                false => StagingEvent::Settled(Box::new(r.clone())),
            };
            let _ = tx.send(ev);
            send_transfers(link, r.attempt, transfers).await;
        });
    }

    /// Tells the broker what an attempt moved (telemetry), off the loop.
    fn report(&self, attempt: AttemptId, moved: Transfers) {
        let link = self.link();
        tokio::spawn(send_transfers(link, attempt, moved));
    }

    /// Attempts being staged in end now with `end` (cancelled, returned,
    /// drained); returns the ids that were not staging in.
    pub(super) fn stop_staging_in(
        &mut self,
        ids: &[AttemptId],
        end: &AttemptEnd,
        work: &mut Work,
    ) -> Vec<AttemptId> {
        let mut rest = Vec::new();
        for &id in ids {
            match self.staging_in.remove(&id) {
                Some(task) => {
                    task.abort();
                    work.transferring.remove(&id);
                    work.finished(AttemptResult::bare(id, end.clone(), 0, unix_us()));
                }
                None => rest.push(id),
            }
        }
        rest
    }

    /// Every attempt staging in ends with `end` (the agent drains).
    pub(super) fn stop_all_staging_in(&mut self, end: &AttemptEnd, work: &mut Work) {
        let ids: Vec<AttemptId> = self.staging_in.keys().copied().collect();
        self.stop_staging_in(&ids, end, work);
    }

    /// Acknowledged attempts: their private directories go (off the loop).
    pub(super) fn forget(&mut self, ids: &[AttemptId]) {
        let mut dirs = Vec::new();
        for id in ids {
            if let Some(mut p) = self.private.remove(id) {
                if let Some(w) = p.watcher.take() {
                    w.abort();
                }
                dirs.push(p.dir);
                dirs.push(snapshot_root(&self.workdir, *id));
            }
        }
        if !dirs.is_empty() {
            tokio::task::spawn_blocking(move || {
                for d in dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
            });
        }
    }
}

/// Sends an attempt's transfer figures when anything moved; a broker that
/// does not answer loses only telemetry.
async fn send_transfers(mut link: Link, attempt: AttemptId, moved: Transfers) {
    if moved == Transfers::default() {
        return;
    }
    let req = StageRequest::Transfers { attempt, moved };
    let sent = tokio::time::timeout(TRANSFERS_SEND_WAIT_MAX, link.request("telemetry", req)).await;
    if let Ok(Err(e)) = sent {
        tracing::debug!("attempt {attempt}: transfer figures not recorded: {e}");
    }
}

/// How long an attempt's transfer figures may wait for the broker.
const TRANSFERS_SEND_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
