//! The staging protocol (SPEC §4 "Data"): how an agent without the broker's
//! filesystem fetches a task's declared inputs and hands back its declared
//! outputs, over extra bidirectional QUIC streams of its one connection.
//!
//! Owns: the messages of a staging stream, their caps, the content address
//! (SHA-256, 64 lowercase hex digits) and what a staged path may be. It must
//! not do I/O beyond hashing a reader it is given; the agent's `staging` and
//! the broker's `staging` modules move the bytes.
//!
//! Stream shape (one request per stream, opened by the agent, so a transfer
//! never waits behind the control stream nor the control stream behind it):
//! - `Inputs`: the broker answers `Files` (hash and size of each declared
//!   input, which it has stored as blobs) or `Refused`.
//! - `Get`: the broker answers `Sending { size }`, then the raw bytes of the
//!   blob from `from` to `size`, then finishes the stream. Resumable: a partial
//!   download asks again from its length.
//! - `Put`: the broker answers `Have { from }` (bytes it already holds of that
//!   blob, `size` when the blob is stored), the agent sends the raw bytes from
//!   `from` and finishes; the broker verifies the hash and answers `Stored`.
//! - `Commit`: the outputs (already put) are materialized in the attempt's
//!   stage on the broker's filesystem; answered `Committed` before the agent
//!   sends the attempt's result, so a counted result always has its outputs.
//!
//! - `InputsVia`/`CommitVia` (protocol 8): the same with the files in an
//!   S3 store (`storage:`, [`crate::object_store`]) instead of these streams.
//! - `GetBatch`/`PutBatch` (protocol 9): many small blobs on one stream, so
//!   a file of a few kilobytes does not cost a stream, a blocking hop on
//!   each side and a lookup of its own: `GetBatch` is answered `Blobs` (each
//!   size) and their bytes back to back; `PutBatch` is answered `Need` (which
//!   the broker does not hold), the agent sends those back to back and
//!   finishes, the broker verifies each and answers `Stored`. Whole files
//!   only (no resume): a batch is at most [`STAGE_BATCH_BYTES_MAX`].
//!
//! Every header is a frame capped at [`STAGE_HEADER_BYTES_MAX`]; raw bytes are
//! bounded by the size the header announced.

use std::io::{self, Read};
use std::path::{Component, Path};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::protocol::AttemptId;

/// Cap of one staging header frame (a `Files`/`Commit` list of many files).
pub const STAGE_HEADER_BYTES_MAX: usize = 8 << 20;
/// Declared files of one attempt that may be staged, at most.
pub const STAGE_FILES_MAX: usize = 100_000;
/// A staged path's bytes, at most.
pub const STAGE_PATH_BYTES_MAX: usize = 4096;
/// One staged file, at most, unless the broker is told otherwise
/// (`SCALABLE_STAGE_FILE_BYTES_MAX`).
pub const STAGE_FILE_BYTES_MAX_DEFAULT: u64 = 64 << 30;
/// All staged files of one attempt (inputs and outputs each), at most, unless
/// the broker is told otherwise (`SCALABLE_STAGE_ATTEMPT_BYTES_MAX`).
pub const STAGE_ATTEMPT_BYTES_MAX_DEFAULT: u64 = 256 << 30;
/// Buffer of one read or write of a transfer.
pub const STAGE_CHUNK_BYTES: usize = 1 << 20;
/// Files of one `GetBatch`/`PutBatch`, at most.
pub const STAGE_BATCH_FILES_MAX: usize = 1024;
/// Bytes of one `GetBatch`/`PutBatch` (all its files), at most: what either
/// side holds in memory for it.
pub const STAGE_BATCH_BYTES_MAX: u64 = 16 << 20;
/// Files up to this size move in batches (the agent's choice; larger ones
/// move on a stream each, resumable).
pub const STAGE_BATCH_FILE_BYTES: u64 = 256 << 10;

/// One staged file: where it goes (as declared, relative to the task's
/// directory) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// What one attempt's staging moved, as the agent measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub in_bytes: u64,
    pub in_ms: u64,
    pub out_bytes: u64,
    pub out_ms: u64,
}

/// The first frame of a staging stream (agent → broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageRequest {
    Inputs {
        attempt: AttemptId,
    },
    Get {
        attempt: AttemptId,
        sha256: String,
        from: u64,
    },
    Put {
        attempt: AttemptId,
        sha256: String,
        size: u64,
    },
    Commit {
        attempt: AttemptId,
        outputs: Vec<StagedFile>,
        moved: Moved,
    },
    /// Protocol 8, sent only by an agent with `--storage`: as `Inputs`, and
    /// the broker puts each input in that object store before answering
    /// `Files` (the agent fetches them from there).
    InputsVia {
        attempt: AttemptId,
        storage: String,
    },
    /// Protocol 8: as `Commit`, the outputs uploaded to that object store;
    /// the broker fetches and verifies them before answering `Committed`.
    CommitVia {
        attempt: AttemptId,
        storage: String,
        outputs: Vec<StagedFile>,
        moved: Moved,
    },
    // Protocol 8 (checkpoints without a shared filesystem): appended, and
    // only a protocol 8 agent sends them, so a protocol 7 stream reads as
    // it did.
    /// The job's `checkpoint:` paths and the files of the task's newest kept
    /// version (granted for `Get`): answered `Checkpoint`.
    CheckpointRestore {
        attempt: AttemptId,
    },
    /// Like `Put`, into the broker's checkpoint uploads (not the cache's
    /// blobs: a checkpoint changes often and is dropped on success).
    CheckpointPut {
        attempt: AttemptId,
        sha256: String,
        size: u64,
    },
    /// Every file of one snapshot of the checkpoint paths is put: it becomes
    /// the attempt's newest version (`seq` orders an attempt's snapshots).
    /// Answered `Sealed`.
    CheckpointSeal {
        attempt: AttemptId,
        seq: u64,
        files: Vec<StagedFile>,
    },
    /// What one attempt's staging moved, sent once when the attempt ends
    /// (telemetry; also for an attempt whose staging failed). Answered
    /// `Noted`.
    Transfers {
        attempt: AttemptId,
        moved: Transfers,
    },
    // Protocol 9: appended, sent only by a protocol 9 agent (a broker
    // refuses agents newer than itself, so only a protocol 9 broker reads
    // them).
    /// Several blobs granted to this connection, whole: answered `Blobs`,
    /// then their bytes back to back in this order.
    GetBatch {
        attempt: AttemptId,
        sha256s: Vec<String>,
    },
    /// Several outputs, whole: answered `Need`; the agent sends the bytes of
    /// those back to back and finishes; answered `Stored` once every one is
    /// verified and stored.
    PutBatch {
        attempt: AttemptId,
        files: Vec<BlobRef>,
    },
}

/// A blob named by its content and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

/// What one attempt moved, as the agent measured it (protocol 8): staging
/// in and out and checkpoint uploads, bytes and milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfers {
    pub in_bytes: u64,
    pub in_ms: u64,
    pub out_bytes: u64,
    pub out_ms: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_ms: u64,
}

/// The broker's answers on a staging stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageReply {
    Files(Vec<StagedFile>),
    Sending {
        size: u64,
    },
    Have {
        from: u64,
    },
    Stored,
    Committed,
    /// A declared input does not exist (the attempt ends `INVALID_INPUT`).
    Missing {
        path: String,
    },
    /// For good: the agent ends the attempt with this (`StagingFailed`).
    Refused {
        reason: String,
    },
    /// Try again shortly (another upload of the same blob is under way).
    Busy,
    // Protocol 8: only ever an answer to a protocol 8 request.
    /// The job's checkpoint paths (empty: the job keeps none) and the files
    /// of the newest kept version (empty: none is kept).
    Checkpoint {
        paths: Vec<String>,
        files: Vec<StagedFile>,
    },
    Sealed,
    Noted,
    // Protocol 9: only ever an answer to a protocol 9 request.
    /// The size of each blob of a `GetBatch`, in its order; the bytes follow.
    Blobs {
        sizes: Vec<u64>,
    },
    /// The positions (in the `PutBatch`) of the files the broker does not
    /// hold: the agent sends those.
    Need {
        positions: Vec<u32>,
    },
}

impl StageRequest {
    pub fn attempt(&self) -> AttemptId {
        match self {
            StageRequest::Inputs { attempt }
            | StageRequest::Get { attempt, .. }
            | StageRequest::Put { attempt, .. }
            | StageRequest::Commit { attempt, .. }
            | StageRequest::InputsVia { attempt, .. }
            | StageRequest::CommitVia { attempt, .. } => *attempt,
            StageRequest::CheckpointRestore { attempt }
            | StageRequest::CheckpointPut { attempt, .. }
            | StageRequest::CheckpointSeal { attempt, .. }
            | StageRequest::Transfers { attempt, .. } => *attempt,
            StageRequest::GetBatch { attempt, .. } | StageRequest::PutBatch { attempt, .. } => {
                *attempt
            }
        }
    }

    /// What is wrong with a request from the network, if anything.
    pub fn check(&self) -> Result<(), String> {
        match self {
            StageRequest::Inputs { .. }
            | StageRequest::CheckpointRestore { .. }
            | StageRequest::Transfers { .. } => Ok(()),
            StageRequest::Get { sha256, .. }
            | StageRequest::Put { sha256, .. }
            | StageRequest::CheckpointPut { sha256, .. } => check_sha256(sha256),
            StageRequest::Commit { outputs, .. } => check_files(outputs),
            StageRequest::InputsVia { storage, .. } => check_url(storage),
            StageRequest::CommitVia {
                storage, outputs, ..
            } => check_url(storage).and_then(|()| check_files(outputs)),
            StageRequest::CheckpointSeal { files, .. } => check_files(files),
            StageRequest::GetBatch { sha256s, .. } => {
                check_batch_len(sha256s.len())?;
                sha256s.iter().try_for_each(|s| check_sha256(s))
            }
            StageRequest::PutBatch { files, .. } => {
                check_batch_len(files.len())?;
                files.iter().try_for_each(|f| check_sha256(&f.sha256))?;
                let total = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
                if total > STAGE_BATCH_BYTES_MAX {
                    return Err(format!(
                        "a batch of {total} bytes, over the limit of {STAGE_BATCH_BYTES_MAX}"
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_batch_len(n: usize) -> Result<(), String> {
    if n == 0 || n > STAGE_BATCH_FILES_MAX {
        return Err(format!(
            "a batch of {n} files (1 to {STAGE_BATCH_FILES_MAX})"
        ));
    }
    Ok(())
}

fn check_url(storage: &str) -> Result<(), String> {
    crate::manifest::check_storage(storage).map_err(|(why, _)| why)
}

/// A list of staged files as it may come from the network.
pub fn check_files(files: &[StagedFile]) -> Result<(), String> {
    if files.len() > STAGE_FILES_MAX {
        return Err(format!(
            "{} files to stage, over the limit of {STAGE_FILES_MAX}",
            files.len()
        ));
    }
    for f in files {
        check_sha256(&f.sha256)?;
        if !is_plain_relative(&f.path) {
            return Err(format!(
                "staged path {:?} is not a plain relative path",
                f.path
            ));
        }
    }
    Ok(())
}

/// Whether `s` is a SHA-256 as blobs are named: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_sha256(s: &str) -> Result<(), String> {
    if is_sha256_hex(s) {
        Ok(())
    } else {
        Err("a staged file's hash is not 64 lowercase hex digits".into())
    }
}

/// A path that can be staged: relative, without `..`, not empty, bounded.
/// Absolute paths and `..` have no place inside an attempt's directory.
pub fn is_plain_relative(p: &str) -> bool {
    let path = Path::new(p);
    p.len() <= STAGE_PATH_BYTES_MAX
        && path.components().next().is_some()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A running SHA-256 (ring's, as the TLS and the cache use).
pub struct Hasher(Context);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(Context::new(&SHA256))
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> String {
        hex(self.0.finish().as_ref())
    }

    /// The SHA-256 of `data` in one call (lowercase hex).
    pub fn digest(data: &[u8]) -> String {
        let mut h = Hasher::default();
        h.update(data);
        h.finish()
    }

    /// Feeds everything `r` yields; returns how many bytes that was.
    pub fn update_from(&mut self, r: &mut impl Read) -> io::Result<u64> {
        let mut buf = vec![0u8; STAGE_CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    self.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Resumes a partial file of a transfer of `size` bytes (a download on the
/// agent, an upload on the broker): a partial longer than `size` is not a
/// prefix and starts over; otherwise its existing prefix is hashed. Leaves
/// `file` at its end for appending; returns the hasher and the bytes it has.
/// `what` names the transfer in the error of a file that shrank meanwhile.
pub fn resume_partial(
    file: &mut std::fs::File,
    size: u64,
    what: &str,
) -> io::Result<(Hasher, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut have = file.metadata()?.len();
    if have > size {
        file.set_len(0)?;
        have = 0;
    }
    let mut hasher = Hasher::default();
    if have > 0 {
        file.seek(SeekFrom::Start(0))?;
        let hashed = hasher.update_from(&mut (&mut *file).take(have))?;
        if hashed != have {
            return Err(io::Error::other(format!(
                "the partial {what} shrank while read"
            )));
        }
    }
    file.seek(SeekFrom::Start(have))?;
    Ok((hasher, have))
}

/// SHA-256 and size of a file.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::default();
    let n = h.update_from(&mut f)?;
    Ok((h.finish(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_only() {
        assert!(is_plain_relative("out/a.txt"));
        assert!(is_plain_relative("./a"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "./"] {
            assert!(!is_plain_relative(bad), "{bad:?} must be refused");
        }
        assert!(!is_plain_relative(&"a".repeat(STAGE_PATH_BYTES_MAX + 1)));
    }

    #[test]
    fn requests_from_the_network_are_checked() {
        let good = "a".repeat(64);
        assert!(StageRequest::Get {
            attempt: 1,
            sha256: good.clone(),
            from: 0
        }
        .check()
        .is_ok());
        for bad in ["A".repeat(64), "a".repeat(63), "../../etc/passwd".into()] {
            let put = StageRequest::Put {
                attempt: 1,
                sha256: bad,
                size: 1,
            };
            assert!(put.check().is_err());
        }
        let commit = StageRequest::Commit {
            attempt: 1,
            outputs: vec![StagedFile {
                path: "/abs".into(),
                sha256: good,
                size: 0,
            }],
            moved: Moved::default(),
        };
        assert!(commit.check().unwrap_err().contains("plain relative"));
    }

    #[test]
    fn hashes_match_the_known_value() {
        assert_eq!(
            Hasher::digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
