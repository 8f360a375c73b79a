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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use scalable_common::object_store::ObjectStore;
use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult};
use scalable_common::staging::Moved;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::unix_us;
use super::work::{apply_exec_event, Work};
use crate::event_log::EventLog;
use crate::executor::ExecEvent;
use crate::log_event;
use crate::staging::transfer::Link;
use crate::staging::{private_dir, stage_in, stage_out};

/// A staging task's outcome, for the session's loop.
pub(super) enum StagingEvent {
    /// Inputs fetched (bytes, ms), or the end of an attempt that cannot start.
    In(Box<Assignment>, Result<(u64, u64), AttemptEnd>),
    /// Outputs handed back, or why not (the result then ends that way).
    Out(Box<AttemptResult>, Result<Moved, AttemptEnd>),
}

/// An attempt that runs in its private directory.
struct Private {
    dir: PathBuf,
    outputs: Vec<String>,
    moved_in: (u64, u64),
}

/// The staging state of one agent, kept across its connections.
pub(super) struct StageFlow {
    enabled: bool,
    workdir: PathBuf,
    conn_tx: watch::Sender<Option<quinn::Connection>>,
    ev_tx: mpsc::UnboundedSender<StagingEvent>,
    staging_in: HashMap<AttemptId, JoinHandle<()>>,
    /// `--storage`: files move through this object store (`staging::s3`).
    storage: Option<Arc<ObjectStore>>,
    private: HashMap<AttemptId, Private>,
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
            staging_in: HashMap::new(),
            storage,
            private: HashMap::new(),
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
                },
            );
            work.transferring.insert(id);
            let (link, tx, os) = (self.link(), self.ev_tx.clone(), self.storage.clone());
            let task = tokio::spawn(async move {
                let done = stage_in(link, os, id, &a.inputs, &a.outputs, &dir).await;
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
                    Ok(moved) => {
                        log_event!(self.log.as_deref(), "stage-in {id} {} {}", moved.0, moved.1);
                        if let Some(p) = self.private.get_mut(&id) {
                            p.moved_in = moved;
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
        }
    }

    /// The executor's event: a success with outputs to hand back waits for
    /// them (the attempt stays running); anything else applies at once.
    pub(super) fn route_exec_event(&mut self, ev: ExecEvent, work: &mut Work) {
        let ExecEvent::Finished(r) = ev else {
            return apply_exec_event(work, ev);
        };
        let out = match self.private.get(&r.attempt) {
            Some(p) if r.end.is_success() && !p.outputs.is_empty() => p,
            _ => return apply_exec_event(work, ExecEvent::Finished(r)),
        };
        let (link, tx, os) = (self.link(), self.ev_tx.clone(), self.storage.clone());
        let (dir, outputs, moved_in) = (out.dir.clone(), out.outputs.clone(), out.moved_in);
        tokio::spawn(async move {
            let done = stage_out(link, os, r.attempt, &dir, &outputs, moved_in).await;
            let _ = tx.send(StagingEvent::Out(Box::new(r), done));
        });
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
        let dirs: Vec<PathBuf> = ids
            .iter()
            .filter_map(|id| self.private.remove(id))
            .map(|p| p.dir)
            .collect();
        if !dirs.is_empty() {
            tokio::task::spawn_blocking(move || {
                for d in dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
            });
        }
    }
}
