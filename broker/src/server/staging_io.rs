//! The staging streams of one agent connection (SPEC §4 "Data", protocol 7):
//! every bidirectional stream the agent opens after its hello carries one
//! `StageRequest`, answered here with the files of `crate::staging`.
//!
//! Owns: reading and answering those streams, the blobs this connection may
//! fetch (those the broker told it of or it uploaded), and how many streams
//! it may have open. Whose attempt it is comes from the core task
//! (`CoreMsg::StageLookup`); file work runs on blocking threads. It must not
//! touch the control stream, the store or any task state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::{AgentId, AttemptId};
use scalable_common::staging::{
    StageReply, StageRequest, STAGE_CHUNK_BYTES, STAGE_HEADER_BYTES_MAX,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::checkpoint_io::{self, CheckpointIo};
use super::staging_batch;
use super::transfer_board::{Direction, TransferBoard};
use super::CoreMsg;
use crate::core::RenderedTask;
use crate::staging::direct::Tally;
use crate::staging::upload::{Begin, Partial};
use crate::staging::{InputError, StagingStore};

/// Staging streams one agent may have open at once; more wait their turn.
const STREAMS_PER_AGENT_MAX: usize = 64;
/// A stream's request must arrive within this.
const REQUEST_WAIT_MAX: Duration = Duration::from_secs(30);
/// Bytes handed to the blocking writer at once during an upload.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// Chunks of a download read ahead of the network.
const READ_AHEAD_CHUNKS: usize = 8;
/// Blobs one connection may fetch, remembered at most.
const GRANTS_MAX: usize = 1_000_000;

/// What the streams of one connection share.
pub(super) struct Ctx {
    pub(super) agent: AgentId,
    pub(super) store: Arc<StagingStore>,
    pub(super) core_tx: mpsc::UnboundedSender<CoreMsg>,
    granted: Mutex<HashSet<String>>,
    /// Checkpoints of agents without a shared filesystem (`checkpoint_io`).
    pub(super) checkpoints: Arc<CheckpointIo>,
    /// Transfers under way, for `why`.
    pub(super) board: Arc<TransferBoard>,
    /// Attempts whose inputs were listed again on this connection for a
    /// fetch that was not granted here (see [`may_fetch`]).
    relisted: tokio::sync::Mutex<HashSet<AttemptId>>,
}

/// What staging streams of every connection share: the staging files and
/// the checkpoints.
pub(super) type StagingShared = (Arc<StagingStore>, Arc<CheckpointIo>, Arc<TransferBoard>);

/// Serves the agent's staging streams until its connection closes.
pub(super) async fn serve_streams(
    conn: quinn::Connection,
    agent: AgentId,
    (store, checkpoints, board): StagingShared,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
) {
    let ctx = Arc::new(Ctx {
        agent,
        store,
        core_tx,
        granted: Mutex::default(),
        checkpoints,
        board,
        relisted: Default::default(),
    });
    let permits = Arc::new(Semaphore::new(STREAMS_PER_AGENT_MAX));
    while let Ok((send, recv)) = conn.accept_bi().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_stream(&ctx, send, recv).await;
            drop(permit);
        });
    }
}

async fn serve_stream(ctx: &Ctx, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let req = tokio::time::timeout(
        REQUEST_WAIT_MAX,
        read_frame::<_, StageRequest>(&mut recv, STAGE_HEADER_BYTES_MAX),
    )
    .await;
    let req = match req {
        Ok(Ok(Some(r))) => r,
        _ => return,
    };
    let reply = match req.check() {
        Err(reason) => Some(StageReply::Refused { reason }),
        Ok(()) => match req {
            StageRequest::Inputs { attempt } => Some(inputs(ctx, attempt).await),
            StageRequest::Get {
                attempt,
                sha256,
                from,
            } => get(ctx, attempt, &sha256, from, &mut send).await,
            StageRequest::Put {
                attempt,
                sha256,
                size,
            } => {
                let store = &ctx.store;
                Some(put(ctx, store, (attempt, &sha256, size), &mut send, &mut recv).await)
            }
            StageRequest::Commit {
                attempt,
                outputs,
                moved,
            } => Some(commit(ctx, attempt, outputs, moved).await),
            StageRequest::InputsVia { attempt, storage } => {
                Some(match lookup(ctx, attempt).await {
                    Ok(task) => {
                        ctx.board.begin(attempt, Direction::In, Some(&storage));
                        let reply =
                            super::staging_s3::inputs(ctx.store.clone(), task, storage).await;
                        if let StageReply::Files(files) = &reply {
                            note_listed(ctx, attempt, Direction::In, files);
                        }
                        reply
                    }
                    Err(r) => r,
                })
            }
            StageRequest::CommitVia {
                attempt,
                storage,
                outputs,
                moved,
            } => Some(match lookup(ctx, attempt).await {
                Ok(task) => {
                    ctx.board.begin(attempt, Direction::Out, Some(&storage));
                    note_listed(ctx, attempt, Direction::Out, &outputs);
                    let store = ctx.store.clone();
                    super::staging_s3::commit(store, task, attempt, storage, outputs, moved).await
                }
                Err(r) => r,
            }),
            StageRequest::Transfers { attempt, moved } => {
                let agent = ctx.agent;
                ctx.board.finish(attempt);
                let _ = ctx.core_tx.send(CoreMsg::Transfers {
                    agent,
                    attempt,
                    moved,
                });
                Some(StageReply::Noted)
            }
            StageRequest::GetBatch { attempt, sha256s } => {
                staging_batch::get_batch(ctx, attempt, sha256s, &mut send).await
            }
            StageRequest::PutBatch { attempt, files } => {
                Some(staging_batch::put_batch(ctx, attempt, files, &mut send, &mut recv).await)
            }
            other => checkpoint_io::serve(ctx, other, &mut send, &mut recv).await,
        },
    };
    if let Some(reply) = reply {
        let _ = write_frame(&mut send, &reply).await;
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

/// The attempt's declared files, when it is this agent's current attempt.
pub(super) async fn lookup(ctx: &Ctx, attempt: AttemptId) -> Result<Arc<RenderedTask>, StageReply> {
    ask_core(ctx, attempt, |agent, attempt, reply| CoreMsg::StageLookup {
        agent,
        attempt,
        reply,
    })
    .await
}

/// Asks the core about `attempt` on this agent (`make` builds the message);
/// a refusal when the core says it is not this agent's current attempt.
pub(super) async fn ask_core<T>(
    ctx: &Ctx,
    attempt: AttemptId,
    make: impl FnOnce(AgentId, AttemptId, oneshot::Sender<Option<T>>) -> CoreMsg,
) -> Result<T, StageReply> {
    let (tx, rx) = oneshot::channel();
    let found = match ctx.core_tx.send(make(ctx.agent, attempt, tx)) {
        Ok(()) => rx.await.ok().flatten(),
        Err(_) => None,
    };
    found.ok_or_else(|| {
        refused(format!(
            "attempt {attempt} is not running on this agent (cancelled, or given to another)"
        ))
    })
}

pub(super) fn refused(reason: impl Into<String>) -> StageReply {
    StageReply::Refused {
        reason: reason.into(),
    }
}

/// `files` were listed for `attempt`'s transfer (for `why` and `analyze`).
fn note_listed(
    ctx: &Ctx,
    attempt: AttemptId,
    direction: Direction,
    files: &[scalable_common::staging::StagedFile],
) {
    let total = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
    ctx.board.expect(attempt, direction, total);
    ctx.board.listed(attempt, direction, files.len() as u64);
}

async fn inputs(ctx: &Ctx, attempt: AttemptId) -> StageReply {
    let task = match lookup(ctx, attempt).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Hashing a large input takes a while: the task waits for it already.
    ctx.board.begin(attempt, Direction::In, None);
    let store = ctx.store.clone();
    let staged = tokio::task::spawn_blocking(move || {
        store.list_inputs(std::path::Path::new(&task.cwd), &task.inputs)
    })
    .await;
    match staged {
        Ok(Ok(files)) => {
            let mut granted = ctx.granted.lock().expect("grants");
            if granted.len() + files.len() > GRANTS_MAX {
                granted.clear();
            }
            granted.extend(files.iter().map(|f| f.sha256.clone()));
            drop(granted);
            note_listed(ctx, attempt, Direction::In, &files);
            StageReply::Files(files)
        }
        Ok(Err(InputError::Missing(path))) => StageReply::Missing { path },
        Ok(Err(InputError::Refused(reason))) => refused(reason),
        Err(e) => refused(format!("staging inputs failed: {e}")),
    }
}

/// Whether this connection may fetch blob `sha256` for `attempt`: one listed
/// to it by `Inputs` on this connection, or else one of the attempt's inputs
/// listed again here (once per attempt). An agent that listed its inputs on a
/// connection that broke (a broker restart, a reconnect) fetches them on the
/// next one; refusing those for good failed the attempt.
pub(super) async fn may_fetch(
    ctx: &Ctx,
    attempt: AttemptId,
    sha256: &str,
) -> Result<(), StageReply> {
    let granted = || ctx.granted.lock().expect("grants").contains(sha256);
    if granted() {
        return Ok(());
    }
    let mut relisted = ctx.relisted.lock().await;
    if !granted() && !relisted.contains(&attempt) {
        match inputs(ctx, attempt).await {
            StageReply::Files(_) => {
                if relisted.len() >= GRANTS_MAX {
                    relisted.clear();
                }
                relisted.insert(attempt);
            }
            other => return Err(other),
        }
    }
    if granted() {
        Ok(())
    } else {
        Err(refused("that blob was not staged for this agent"))
    }
}

/// Streams blob `sha256` from byte `from`; `None`: the bytes were the answer.
async fn get(
    ctx: &Ctx,
    attempt: AttemptId,
    sha256: &str,
    from: u64,
    send: &mut quinn::SendStream,
) -> Option<StageReply> {
    if let Err(reply) = may_fetch(ctx, attempt, sha256).await {
        return Some(reply);
    }
    let (size, mut chunks) = match open_blob(ctx.store.clone(), sha256, from).await {
        Ok(opened) => opened,
        Err(e) => return Some(refused(format!("blob {sha256}: {e}"))),
    };
    if write_frame(send, &StageReply::Sending { size })
        .await
        .is_err()
    {
        return None;
    }
    // A read error or a short blob ends the stream short: the agent asks again.
    let mut first = true;
    while let Some(Ok(chunk)) = chunks.recv().await {
        let n = chunk.len() as u64;
        if send.write_chunk(chunk).await.is_err() {
            break;
        }
        ctx.board.moved(attempt, Direction::In, n);
        if first && size - from > n {
            // Tests: a fetch that stalls after its first chunk.
            let hit = || scalable_common::failpoint::hit("broker.staging.get");
            let _ = tokio::task::spawn_blocking(hit).await;
        }
        first = false;
    }
    None
}

/// The size of blob `sha256` and its bytes from `from`, read ahead on a
/// blocking thread in chunks (a small blob in one read). A large input not
/// stored yet is read from its source (`staging::direct`) and stored after a
/// fetch from its start sent exactly the bytes of its name.
async fn open_blob(
    store: Arc<StagingStore>,
    sha256: &str,
    from: u64,
) -> std::io::Result<(u64, mpsc::Receiver<std::io::Result<Bytes>>)> {
    use std::io::{Read, Seek};
    let (tx, rx) = mpsc::channel(READ_AHEAD_CHUNKS);
    let (size_tx, size_rx) = oneshot::channel();
    let sha = sha256.to_string();
    tokio::task::spawn_blocking(move || {
        let opened = store.open_for_fetch(&sha).and_then(|mut o| {
            if from > o.size {
                return Err(std::io::Error::other(format!(
                    "it has {} bytes, not {from}",
                    o.size
                )));
            }
            o.file.seek(std::io::SeekFrom::Start(from))?;
            Ok(o)
        });
        let opened = match opened {
            Ok(o) => o,
            Err(e) => return drop(size_tx.send(Err(e))),
        };
        if size_tx.send(Ok(opened.size)).is_err() {
            return;
        }
        let source = opened.source.filter(|_| from == 0);
        let mut tally = source.as_ref().map(|_| Tally::new());
        let mut file = opened.file.take(opened.size - from);
        loop {
            let mut buf = vec![0u8; STAGE_CHUNK_BYTES];
            let n = match read_full(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return drop(tx.blocking_send(Err(e))),
            };
            buf.truncate(n);
            if let Some(t) = tally.as_mut() {
                t.update(&buf);
            }
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
        drop(tx); // the fetch ends now; the copy below is off its path
        if let (Some(source), Some(tally)) = (source, tally) {
            if tally.matches(&source) {
                if let Err(e) = store.store_served(&source) {
                    tracing::warn!("cannot store input blob {}: {e}", source.sha256);
                }
            }
        }
    });
    let size = size_rx.await.map_err(std::io::Error::other)??;
    Ok((size, rx))
}

/// Fills `buf` as far as the reader goes.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An upload of blob `sha256` (`size` bytes) by `attempt` into `store` (the
/// cache's blobs for outputs, the checkpoint uploads for checkpoints).
pub(super) async fn put(
    ctx: &Ctx,
    store: &Arc<StagingStore>,
    (attempt, sha256, size): (AttemptId, &str, u64),
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> StageReply {
    if let Err(r) = lookup(ctx, attempt).await {
        return r;
    }
    if let Err(why) = store.count_upload(attempt, sha256, size) {
        return refused(why);
    }
    // Outputs (not checkpoint snapshots, which move while the task runs).
    let outputs = Arc::ptr_eq(store, &ctx.store);
    if outputs {
        ctx.board.expect(attempt, Direction::Out, size);
        ctx.board.listed(attempt, Direction::Out, 1);
    }
    let done = |ctx: &Ctx| {
        if outputs {
            ctx.board.moved(attempt, Direction::Out, size);
        }
    };
    let store = store.clone();
    let sha = sha256.to_string();
    let begun = tokio::task::spawn_blocking(move || store.begin_upload(&sha, size)).await;
    let partial = match begun {
        Ok(Ok(Begin::Stored)) => {
            grant(ctx, sha256);
            done(ctx);
            return StageReply::Stored;
        }
        Ok(Ok(Begin::Busy)) => return StageReply::Busy,
        Ok(Ok(Begin::Resume(p))) => p,
        Ok(Err(e)) => return refused(format!("cannot receive blob {sha256}: {e}")),
        Err(e) => return refused(format!("cannot receive blob {sha256}: {e}")),
    };
    if write_frame(send, &StageReply::Have { from: partial.have })
        .await
        .is_err()
    {
        return refused("the agent went away");
    }
    match receive(partial, recv).await {
        Ok(()) => {
            grant(ctx, sha256);
            done(ctx);
            StageReply::Stored
        }
        Err(e) => refused(e),
    }
}

/// The raw bytes of an upload into its partial file, then the check. What
/// arrived before a break is written anyway: the next upload resumes there.
async fn receive(mut partial: Box<Partial>, recv: &mut quinn::RecvStream) -> Result<(), String> {
    let mut batch = Vec::new();
    let mut batched = 0usize;
    loop {
        let chunk = recv.read_chunk(STAGE_CHUNK_BYTES, true).await;
        let (end, broke) = match chunk {
            Ok(Some(c)) => {
                batched += c.bytes.len();
                batch.push(c.bytes);
                (false, None)
            }
            Ok(None) => (true, None),
            Err(e) => (true, Some(format!("the upload broke off: {e}"))),
        };
        if end && broke.is_none() {
            // The last bytes and the check in one hop: a small upload costs
            // one blocking call besides its start.
            return tokio::task::spawn_blocking(move || {
                for c in &batch {
                    partial.write(c)?;
                }
                partial.finish()
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        if batched >= WRITE_BATCH_BYTES || (end && batched > 0) {
            let chunks = std::mem::take(&mut batch);
            batched = 0;
            partial = tokio::task::spawn_blocking(move || {
                for c in &chunks {
                    partial.write(c)?;
                }
                Ok::<_, String>(partial)
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        if let Some(why) = broke {
            return Err(why);
        }
    }
}

pub(super) fn grant(ctx: &Ctx, sha256: &str) {
    ctx.granted
        .lock()
        .expect("grants")
        .insert(sha256.to_string());
}

async fn commit(
    ctx: &Ctx,
    attempt: AttemptId,
    outputs: Vec<scalable_common::staging::StagedFile>,
    moved: scalable_common::staging::Moved,
) -> StageReply {
    let task = match lookup(ctx, attempt).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Some(f) = outputs.iter().find(|f| !ctx.store.has_blob(&f.sha256)) {
        return refused(format!("output {} was not uploaded", f.path));
    }
    let store = ctx.store.clone();
    let done = tokio::task::spawn_blocking(move || {
        store.materialize(
            std::path::Path::new(&task.cwd),
            attempt,
            &task.outputs,
            &outputs,
        )
    })
    .await;
    match done {
        Ok(Ok(())) => {
            ctx.board.end(attempt);
            tracing::info!(
                "attempt {attempt}: staged {} B in ({} ms), {} B out ({} ms)",
                moved.in_bytes,
                moved.in_ms,
                moved.out_bytes,
                moved.out_ms
            );
            StageReply::Committed
        }
        Ok(Err(e)) => refused(e),
        Err(e) => refused(e.to_string()),
    }
}
