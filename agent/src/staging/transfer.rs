//! The agent's staging client: files to and from the broker's blob store over
//! extra streams of the agent's connection (protocol 7, `common::staging`).
//!
//! Owns: one request per stream, resuming a broken transfer on the next
//! connection (a download from its partial file's length, an upload from what
//! the broker says it has), verifying what arrives against its SHA-256. It
//! must not decide what to stage nor touch the agent's work; file I/O runs on
//! blocking threads (the agent's runtime has one thread, which its tasks'
//! traffic needs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use scalable_common::frame::{read_frame, write_frame};
use scalable_common::protocol::AttemptId;
use scalable_common::staging::{
    is_plain_relative, Moved, StageReply, StageRequest, StagedFile, STAGE_CHUNK_BYTES,
    STAGE_FILES_MAX, STAGE_HEADER_BYTES_MAX,
};
use tokio::sync::watch;

use super::batch;
use super::local::{self, Source, SMALL_FILE_BYTES};

/// Tries of one transfer across broken connections, at most.
const TRIES_MAX: u32 = 30;
/// Waits between tries: doubling from the first to the last.
const RETRY_WAIT_MIN: Duration = Duration::from_millis(100);
const RETRY_WAIT_MAX: Duration = Duration::from_secs(5);
/// Files of one attempt moved at once: small files cost a round trip each,
/// and one at a time that, not the bytes, would set the pace.
const FILES_IN_FLIGHT_MAX: usize = 32;
/// Suffix of a download in progress, beside its final name.
const PARTIAL_SUFFIX: &str = ".scalable-partial";

/// Why a transfer did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The broker said no, for good (a bound, not this agent's attempt...).
    Refused(String),
    /// A declared input does not exist on the broker's side.
    Missing(String),
    /// The link broke (tried again on the next connection until `TRIES_MAX`).
    Broken(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Refused(m) | TransferError::Broken(m) => f.write_str(m),
            TransferError::Missing(p) => write!(f, "missing input: {p}"),
        }
    }
}

pub(super) fn broken(e: impl std::fmt::Display) -> TransferError {
    TransferError::Broken(e.to_string())
}

pub(super) fn local_error(path: &Path, e: impl std::fmt::Display) -> TransferError {
    TransferError::Refused(format!("{}: {e}", path.display()))
}

/// The agent's current connection, as staging sees it: `None` while the
/// broker is away. Cloned into every transfer.
#[derive(Clone)]
pub struct Link(watch::Receiver<Option<quinn::Connection>>);

impl Link {
    pub fn new(rx: watch::Receiver<Option<quinn::Connection>>) -> Link {
        Link(rx)
    }

    /// The connection, once there is one.
    async fn conn(&mut self) -> Result<quinn::Connection, TransferError> {
        let c = self
            .0
            .wait_for(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
            .await
            .map_err(|_| TransferError::Broken("the agent is stopping".into()))?;
        Ok(c.clone().expect("waited for some"))
    }

    /// Runs `op` until it succeeds or fails for good; a broken link waits for
    /// the next connection (the operation resumes where it can).
    pub(super) async fn retrying<T, F, Fut>(
        &mut self,
        what: &str,
        mut op: F,
    ) -> Result<T, TransferError>
    where
        F: FnMut(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, TransferError>>,
    {
        let mut wait = RETRY_WAIT_MIN;
        let mut last = String::new();
        for _ in 0..TRIES_MAX {
            let conn = self.conn().await?;
            match op(conn).await {
                Err(TransferError::Broken(e)) => {
                    tracing::debug!("{what}: {e}; trying again");
                    last = e;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_WAIT_MAX);
                }
                other => return other,
            }
        }
        Err(TransferError::Refused(format!(
            "{what} failed {TRIES_MAX} times (last: {last})"
        )))
    }

    /// The declared inputs of `attempt` as the broker stored them.
    pub async fn input_list(
        &mut self,
        attempt: AttemptId,
    ) -> Result<Vec<StagedFile>, TransferError> {
        self.retrying("asking for the inputs", |conn| async move {
            let (_s, _r, reply) = ask(&conn, &StageRequest::Inputs { attempt }).await?;
            match reply {
                StageReply::Files(files) => {
                    scalable_common::staging::check_files(&files)
                        .map_err(TransferError::Refused)?;
                    Ok(files)
                }
                other => Err(unexpected(other)),
            }
        })
        .await
    }

    /// Fetches every file into `dir` (at its relative path), several at once
    /// (small ones in batches); returns the bytes.
    pub async fn get_all(
        &mut self,
        attempt: AttemptId,
        files: &[StagedFile],
        dir: &Path,
    ) -> Result<u64, TransferError> {
        let sizes: Vec<Option<u64>> = files.iter().map(|f| Some(f.size)).collect();
        let jobs = batch::plan(&sizes).into_iter().map(|group| {
            let (mut link, dir) = (self.clone(), dir.to_path_buf());
            let mut group: Vec<StagedFile> = group.iter().map(|&i| files[i].clone()).collect();
            async move {
                if group.len() > 1 {
                    return batch::get_batch(link, attempt, group, dir).await;
                }
                let f = group.pop().expect("a group has a file");
                link.get_file(attempt, &f, &dir.join(&f.path)).await?;
                Ok(f.size)
            }
        });
        Ok(in_flight(jobs).await?.into_iter().sum())
    }

    /// Uploads `(path, declared)` pairs, several at once (small ones in
    /// batches); their files in the same order.
    pub async fn put_all(
        &mut self,
        attempt: AttemptId,
        files: Vec<(PathBuf, String)>,
    ) -> Result<Vec<StagedFile>, TransferError> {
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        let sizes = local::blocking(move || Ok(local::sizes(&paths)))
            .await
            .map_err(broken)?;
        let jobs = batch::plan(&sizes).into_iter().map(|group| {
            let mut link = self.clone();
            let mut group: Vec<(usize, (PathBuf, String))> =
                group.iter().map(|&i| (i, files[i].clone())).collect();
            async move {
                let positions: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
                let staged = if group.len() > 1 {
                    let group = group.into_iter().map(|(_, f)| f).collect();
                    batch::put_batch(link, attempt, group).await?
                } else {
                    let (_, (path, declared)) = group.pop().expect("a group has a file");
                    vec![link.put_file(attempt, &path, &declared).await?]
                };
                Ok(positions.into_iter().zip(staged).collect::<Vec<_>>())
            }
        });
        let mut done: Vec<(usize, StagedFile)> = in_flight(jobs).await?.concat();
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, f)| f).collect())
    }

    /// Fetches one blob to `dest`: into `dest.scalable-partial`, resumed from
    /// its length after a break, checked against the hash, then renamed.
    pub async fn get_file(
        &mut self,
        attempt: AttemptId,
        f: &StagedFile,
        dest: &Path,
    ) -> Result<(), TransferError> {
        if !is_plain_relative(&f.path) {
            return Err(TransferError::Refused(format!(
                "{} is not a relative path",
                f.path
            )));
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| local_error(parent, e))?;
        }
        let partial = partial_path(dest);
        for _ in 0..2 {
            let verified = self
                .retrying("fetching an input", |conn| {
                    download(conn, attempt, f, partial.clone(), dest.to_path_buf())
                })
                .await?;
            if verified {
                return Ok(());
            }
            // Torn or changed underneath: once more from the start.
            let _ = tokio::fs::remove_file(&partial).await;
        }
        Err(TransferError::Refused(format!(
            "the fetched bytes of {} do not match their SHA-256",
            f.path
        )))
    }

    /// Uploads `path` as the blob of its content; `declared` names it.
    pub async fn put_file(
        &mut self,
        attempt: AttemptId,
        path: &Path,
        declared: &str,
    ) -> Result<StagedFile, TransferError> {
        self.put_as(attempt, path, declared, false).await
    }

    /// `put_file` into the broker's checkpoint uploads (protocol 8).
    pub async fn put_checkpoint_file(
        &mut self,
        attempt: AttemptId,
        path: &Path,
        declared: &str,
    ) -> Result<StagedFile, TransferError> {
        self.put_as(attempt, path, declared, true).await
    }

    async fn put_as(
        &mut self,
        attempt: AttemptId,
        path: &Path,
        declared: &str,
        checkpoint: bool,
    ) -> Result<StagedFile, TransferError> {
        let p = path.to_path_buf();
        let (sha256, size, source) = local::blocking(move || local::load(&p))
            .await
            .map_err(|e| local_error(path, e))?;
        let file = StagedFile {
            path: declared.to_string(),
            sha256,
            size,
        };
        let req = match checkpoint {
            false => StageRequest::Put {
                attempt,
                sha256: file.sha256.clone(),
                size: file.size,
            },
            true => StageRequest::CheckpointPut {
                attempt,
                sha256: file.sha256.clone(),
                size: file.size,
            },
        };
        self.retrying("uploading an output", |conn| {
            upload(conn, req.clone(), &file, &source)
        })
        .await?;
        Ok(file)
    }

    /// One request whose answer is a single reply (retried across broken
    /// connections); a refusal is an error.
    pub async fn request(
        &mut self,
        what: &str,
        req: StageRequest,
    ) -> Result<StageReply, TransferError> {
        self.ask_until(what, req, |r| {
            !matches!(
                r,
                StageReply::Refused { .. } | StageReply::Missing { .. } | StageReply::Busy
            )
        })
        .await
    }

    /// `req` asked again across broken connections until a reply comes;
    /// a reply `accept` refuses is an error.
    async fn ask_until(
        &mut self,
        what: &str,
        req: StageRequest,
        accept: fn(&StageReply) -> bool,
    ) -> Result<StageReply, TransferError> {
        self.retrying(what, |conn| {
            let req = req.clone();
            async move {
                let reply = ask(&conn, &req).await?.2;
                if accept(&reply) {
                    Ok(reply)
                } else {
                    Err(unexpected(reply))
                }
            }
        })
        .await
    }

    /// Uploads every regular file under `dir` (relative names, sorted): what
    /// a checkpoint directory holds, say. `get_all` puts them back.
    pub async fn put_dir(
        &mut self,
        attempt: AttemptId,
        dir: &Path,
    ) -> Result<Vec<StagedFile>, TransferError> {
        let d = dir.to_path_buf();
        let names = tokio::task::spawn_blocking(move || list_files(&d))
            .await
            .map_err(broken)?
            .map_err(|e| local_error(dir, e))?;
        let files = names.into_iter().map(|n| (dir.join(&n), n)).collect();
        self.put_all(attempt, files).await
    }

    /// One request answered by `Files` or `Committed`, tried again across
    /// broken links (the S3 transport's `InputsVia`/`CommitVia`).
    pub async fn ask_retrying(
        &mut self,
        what: &str,
        req: StageRequest,
    ) -> Result<StageReply, TransferError> {
        self.ask_until(what, req, |r| {
            matches!(r, StageReply::Files(_) | StageReply::Committed)
        })
        .await
    }

    /// The uploaded outputs are the attempt's: the broker puts them in its stage.
    pub async fn commit(
        &mut self,
        attempt: AttemptId,
        outputs: &[StagedFile],
        moved: Moved,
    ) -> Result<(), TransferError> {
        let req = StageRequest::Commit {
            attempt,
            outputs: outputs.to_vec(),
            moved,
        };
        self.retrying("handing back the outputs", |conn| {
            let req = req.clone();
            async move {
                match ask(&conn, &req).await?.2 {
                    StageReply::Committed => Ok(()),
                    other => Err(unexpected(other)),
                }
            }
        })
        .await
    }
}

/// Runs the transfers with at most [`FILES_IN_FLIGHT_MAX`] at once (each on
/// a task of its own); their results in order, or the first error.
async fn in_flight<T, F>(jobs: impl Iterator<Item = F>) -> Result<Vec<T>, TransferError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, TransferError>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut done: Vec<(usize, T)> = Vec::new();
    for (i, job) in jobs.enumerate() {
        if set.len() >= FILES_IN_FLIGHT_MAX {
            done.push(joined(set.join_next().await)?);
        }
        set.spawn(async move { (i, job.await) });
    }
    while let Some(r) = set.join_next().await {
        done.push(joined(Some(r))?);
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

type Joined<T> = Option<Result<(usize, Result<T, TransferError>), tokio::task::JoinError>>;

fn joined<T>(r: Joined<T>) -> Result<(usize, T), TransferError> {
    match r {
        Some(Ok((i, Ok(t)))) => Ok((i, t)),
        Some(Ok((_, Err(e)))) => Err(e),
        Some(Err(e)) => Err(broken(e)),
        None => Err(broken("no transfer to wait for")),
    }
}

/// Where a download of `dest` is written until it is complete.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PARTIAL_SUFFIX);
    dest.with_file_name(name)
}

/// Opens a stream and sends one request; returns the first reply.
pub(super) async fn ask(
    conn: &quinn::Connection,
    req: &StageRequest,
) -> Result<(quinn::SendStream, quinn::RecvStream, StageReply), TransferError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(broken)?;
    write_frame(&mut send, req).await.map_err(broken)?;
    match read_frame::<_, StageReply>(&mut recv, STAGE_HEADER_BYTES_MAX).await {
        Ok(Some(reply)) => Ok((send, recv, reply)),
        Ok(None) => Err(broken("the broker closed a staging stream")),
        Err(e) => Err(broken(e)),
    }
}

/// A reply that is not the one asked for: a refusal, or the broker's
/// misbehaviour (refused too: asking again would get the same).
pub fn unexpected(reply: StageReply) -> TransferError {
    match reply {
        StageReply::Refused { reason } => TransferError::Refused(reason),
        StageReply::Missing { path } => TransferError::Missing(path),
        StageReply::Busy => TransferError::Broken("the broker is busy with that blob".into()),
        other => TransferError::Refused(format!("unexpected staging reply {other:?}")),
    }
}

/// Fetches `f` into `dest`, resuming a large file's partial download;
/// `Ok(false)`: the bytes did not match their hash (the partial is stale).
async fn download(
    conn: quinn::Connection,
    attempt: AttemptId,
    f: &StagedFile,
    partial: PathBuf,
    dest: PathBuf,
) -> Result<bool, TransferError> {
    if f.size <= SMALL_FILE_BYTES {
        let data = fetch(&conn, attempt, f).await?;
        let (sha, p) = (f.sha256.clone(), partial.clone());
        return local::blocking(move || local::write_verified(&data, &sha, &p, &dest))
            .await
            .map_err(|e| local_error(&partial, e));
    }
    let (size, p) = (f.size, partial.clone());
    let (file, hasher, from) = local::blocking(move || local::open_partial(&p, size))
        .await
        .map_err(|e| local_error(&partial, e))?;
    let writer = local::Writer::start(file, hasher, from);
    let fetched = if from < f.size {
        stream_into(&conn, attempt, f, from, &writer).await
    } else {
        Ok(())
    };
    // What arrived before a break is written anyway: the next try resumes.
    let (hasher, have) = writer
        .finish()
        .await
        .map_err(|e| local_error(&partial, e))?;
    fetched?;
    if have < f.size {
        return Err(broken(format!(
            "{} broke off at {have} of {} bytes",
            f.path, f.size
        )));
    }
    if hasher.finish() != f.sha256 {
        return Ok(false);
    }
    tokio::fs::rename(&partial, &dest)
        .await
        .map_err(|e| local_error(&dest, e))?;
    Ok(true)
}

/// Asks for blob `f` from byte `from`; the stream its bytes follow on.
async fn get_stream(
    conn: &quinn::Connection,
    attempt: AttemptId,
    f: &StagedFile,
    from: u64,
) -> Result<quinn::RecvStream, TransferError> {
    let req = StageRequest::Get {
        attempt,
        sha256: f.sha256.clone(),
        from,
    };
    let (_send, recv, reply) = ask(conn, &req).await?;
    match reply {
        StageReply::Sending { size } if size == f.size => Ok(recv),
        StageReply::Sending { size } => Err(TransferError::Refused(format!(
            "the broker has {size} bytes of {}, not {}",
            f.path, f.size
        ))),
        other => Err(unexpected(other)),
    }
}

/// A small blob's bytes, whole.
async fn fetch(
    conn: &quinn::Connection,
    attempt: AttemptId,
    f: &StagedFile,
) -> Result<Vec<u8>, TransferError> {
    let mut recv = get_stream(conn, attempt, f, 0).await?;
    let want = f.size as usize;
    let mut data = Vec::with_capacity(want);
    while data.len() < want {
        match recv
            .read_chunk(want - data.len(), true)
            .await
            .map_err(broken)?
        {
            Some(c) => data.extend_from_slice(&c.bytes),
            None => break,
        }
    }
    if data.len() < want {
        return Err(broken(format!("{} broke off", f.path)));
    }
    Ok(data)
}

/// A large blob's bytes from `from` handed to the writer as they arrive.
async fn stream_into(
    conn: &quinn::Connection,
    attempt: AttemptId,
    f: &StagedFile,
    from: u64,
    writer: &local::Writer,
) -> Result<(), TransferError> {
    let mut recv = get_stream(conn, attempt, f, from).await?;
    let mut have = from;
    let mut pending = Vec::new();
    let mut pending_bytes = 0usize;
    while have < f.size {
        let want = STAGE_CHUNK_BYTES.min((f.size - have) as usize);
        let (arrived, failed) = match recv.read_chunk(want, true).await {
            Ok(Some(c)) => {
                have += c.bytes.len() as u64;
                pending_bytes += c.bytes.len();
                pending.push(c.bytes);
                (true, None)
            }
            Ok(None) => (false, None),
            Err(e) => (false, Some(e)),
        };
        if pending_bytes >= STAGE_CHUNK_BYTES || !arrived || have >= f.size {
            pending_bytes = 0;
            if writer.write(std::mem::take(&mut pending)).await.is_err() {
                break; // the writer failed: `finish` says why
            }
        }
        if let Some(e) = failed {
            return Err(broken(e));
        }
        if !arrived {
            break;
        }
    }
    Ok(())
}

/// `req` is the `Put` (or `CheckpointPut`) of `f`.
async fn upload(
    conn: quinn::Connection,
    req: StageRequest,
    f: &StagedFile,
    source: &Source,
) -> Result<(), TransferError> {
    let (mut send, mut recv, reply) = ask(&conn, &req).await?;
    let from = match reply {
        StageReply::Stored => return Ok(()),
        StageReply::Have { from } if from <= f.size => from,
        other => return Err(unexpected(other)),
    };
    match source {
        Source::Memory(data) => {
            let rest = data.slice((from as usize).min(data.len())..);
            send.write_chunk(rest).await.map_err(broken)?;
        }
        Source::File(path) => send_file(&mut send, f, path, from).await?,
    }
    send.finish().map_err(broken)?;
    match read_frame::<_, StageReply>(&mut recv, STAGE_HEADER_BYTES_MAX).await {
        Ok(Some(StageReply::Stored)) => Ok(()),
        Ok(Some(other)) => Err(unexpected(other)),
        Ok(None) => Err(broken("the broker closed an upload without a word")),
        Err(e) => Err(broken(e)),
    }
}

/// A large file's bytes from `from`, read ahead on a reader thread.
async fn send_file(
    send: &mut quinn::SendStream,
    f: &StagedFile,
    path: &Path,
    from: u64,
) -> Result<(), TransferError> {
    let mut chunks = local::read_ahead(path.to_path_buf(), from, f.size - from);
    let mut left = f.size - from;
    while left > 0 {
        let chunk = match chunks.recv().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(local_error(path, e)),
            None => {
                return Err(TransferError::Refused(format!(
                    "{} shrank while uploaded",
                    f.path
                )))
            }
        };
        left -= chunk.len() as u64;
        send.write_chunk(chunk).await.map_err(broken)?;
        if left > 0 && f.size - from - left <= STAGE_CHUNK_BYTES as u64 {
            // Tests: an agent stopped (or killed) in the middle of an upload.
            let hit = || scalable_common::failpoint::hit("agent.staging.upload");
            let _ = tokio::task::spawn_blocking(hit).await;
        }
    }
    Ok(())
}

/// Regular files under `dir`, as sorted relative paths (bounded).
fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                let rel = entry.path().strip_prefix(dir).map(|p| p.to_path_buf());
                if let Some(s) = rel.ok().and_then(|p| p.to_str().map(str::to_string)) {
                    out.push(s);
                }
            }
            if out.len() > STAGE_FILES_MAX {
                return Err(std::io::Error::other(format!(
                    "more than {STAGE_FILES_MAX} files to stage"
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}
