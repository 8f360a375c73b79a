//! The broker's side of staging (SPEC §4 "Data") as files: the declared
//! inputs of a task stored as blobs, uploads received into partial files and
//! verified before they become blobs, and outputs materialized in an
//! attempt's stage on the broker's filesystem (where the ordinary promotion
//! renames them once the attempt is counted).
//!
//! Owns: the blob files staging writes (the cache's store under
//! `<state>/cache`, same layout, so a staged output and a cached one are one
//! file: see [`crate::cache::Blobs::blob_path`]), `<state>/cache/partial/`,
//! the size bounds and the input hash memo. Synchronous and blocking: the
//! shell (`server::staging_io`) calls it on blocking threads. It must not
//! decide whether an attempt may stage (the core says whose attempt it is)
//! nor touch the store.

pub mod batch;
pub mod direct;
pub mod s3;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use scalable_common::private_files;
use scalable_common::protocol::AttemptId;
use scalable_common::stage::stage_dir;
use scalable_common::staging::{
    is_plain_relative, Hasher, StagedFile, STAGE_ATTEMPT_BYTES_MAX_DEFAULT, STAGE_CHUNK_BYTES,
    STAGE_FILE_BYTES_MAX_DEFAULT,
};
use scalable_common::units::format_size;

use crate::cache::Blobs;

/// Input hashes remembered (by device, inode, size and mtime), at most.
const INPUT_MEMO_MAX: usize = 100_000;
/// Attempts whose uploaded bytes are counted at once, at most.
const ATTEMPT_TALLY_MAX: usize = 100_000;

/// The size bounds of staging.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub file_bytes_max: u64,
    pub attempt_bytes_max: u64,
}

impl Limits {
    /// The defaults, or `SCALABLE_STAGE_FILE_BYTES_MAX` and
    /// `SCALABLE_STAGE_ATTEMPT_BYTES_MAX` (sizes such as `2G`) when set.
    pub fn from_env() -> Limits {
        let read = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| scalable_common::units::parse_size_bytes(&v).ok())
                .unwrap_or(default)
        };
        Limits {
            file_bytes_max: read(
                "SCALABLE_STAGE_FILE_BYTES_MAX",
                STAGE_FILE_BYTES_MAX_DEFAULT,
            ),
            attempt_bytes_max: read(
                "SCALABLE_STAGE_ATTEMPT_BYTES_MAX",
                STAGE_ATTEMPT_BYTES_MAX_DEFAULT,
            ),
        }
    }

    pub(crate) fn file_refusal(&self, what: &str, path: &str, size: u64) -> Option<String> {
        (size > self.file_bytes_max).then(|| {
            format!(
                "{what} {path} is {}, over the staging limit of {} a file (hint: raise SCALABLE_STAGE_FILE_BYTES_MAX on the broker, or run the job where the filesystem is shared)",
                format_size(size),
                format_size(self.file_bytes_max)
            )
        })
    }

    pub(crate) fn attempt_refusal(&self, what: &str, total: u64) -> Option<String> {
        (total > self.attempt_bytes_max).then(|| {
            format!(
                "the {what} of this attempt add up to {}, over the staging limit of {} an attempt (hint: raise SCALABLE_STAGE_ATTEMPT_BYTES_MAX on the broker)",
                format_size(total),
                format_size(self.attempt_bytes_max)
            )
        })
    }
}

/// Why an input could not be staged.
#[derive(Debug, PartialEq, Eq)]
pub enum InputError {
    /// It does not exist (the attempt ends `INVALID_INPUT`).
    Missing(String),
    /// Anything else, said in one line.
    Refused(String),
}

/// The staging files of one broker.
pub struct StagingStore {
    blobs: Blobs,
    partial: PathBuf,
    pub limits: Limits,
    /// (device, inode, size, mtime ns) → SHA-256 of inputs already stored.
    memo: Mutex<HashMap<(u64, u64, u64, i64), String>>,
    /// The blobs (and their sizes) each attempt has uploaded, bounded by
    /// `attempt_bytes_max`; a blob sent again (a retry) counts once.
    tally: Mutex<HashMap<AttemptId, Uploaded>>,
    /// Blobs being uploaded now: one upload of a blob at a time.
    uploading: Mutex<HashSet<String>>,
    /// Large inputs listed but not stored yet: blob → its source and the
    /// key it had when hashed (`direct`).
    sources: Mutex<HashMap<String, (PathBuf, direct::FileKey)>>,
}

impl StagingStore {
    /// `cache_dir` is `<state>/cache`, the cache's blob store.
    pub fn new(cache_dir: &Path, limits: Limits) -> StagingStore {
        StagingStore {
            blobs: Blobs::new(cache_dir),
            partial: cache_dir.join("partial"),
            limits,
            memo: Mutex::default(),
            tally: Mutex::default(),
            uploading: Mutex::default(),
            sources: Mutex::default(),
        }
    }

    /// The broker's: blobs in `<state>/cache`, bounds from the environment.
    pub fn for_state_dir(state_dir: &Path) -> std::sync::Arc<StagingStore> {
        let store = StagingStore::new(&state_dir.join("cache"), Limits::from_env());
        std::sync::Arc::new(store)
    }

    /// Where the blob `sha256` is (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs.blob_path(sha256)
    }

    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blobs.contains(sha256)
    }

    /// Each declared input of a task in `cwd`, stored as a blob (hashed while
    /// copied; an unchanged file already stored costs a `stat`).
    pub fn stage_inputs(
        &self,
        cwd: &Path,
        inputs: &[String],
    ) -> Result<Vec<StagedFile>, InputError> {
        self.inputs_as(cwd, inputs, false)
    }

    /// As [`StagingStore::stage_inputs`] for a fetch through the broker: a
    /// large input not stored yet is only hashed, and served from where it
    /// is until a verified fetch stores it ([`direct`]).
    pub fn list_inputs(
        &self,
        cwd: &Path,
        inputs: &[String],
    ) -> Result<Vec<StagedFile>, InputError> {
        self.inputs_as(cwd, inputs, true)
    }

    fn inputs_as(
        &self,
        cwd: &Path,
        inputs: &[String],
        direct: bool,
    ) -> Result<Vec<StagedFile>, InputError> {
        let mut total = 0u64;
        let mut sized = Vec::with_capacity(inputs.len());
        for input in inputs {
            if !is_plain_relative(input) {
                return Err(InputError::Refused(format!(
                    "input {input} is not inside the task's directory; without a shared filesystem inputs are relative paths"
                )));
            }
            let path = cwd.join(input);
            let meta = match fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => return Err(InputError::Refused(format!("input {input} is not a file"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(InputError::Missing(input.clone()))
                }
                Err(e) => return Err(InputError::Refused(format!("input {input}: {e}"))),
            };
            if let Some(why) = self.limits.file_refusal("input", input, meta.len()) {
                return Err(InputError::Refused(why));
            }
            total = total.saturating_add(meta.len());
            sized.push((input, path, meta));
        }
        if let Some(why) = self.limits.attempt_refusal("inputs", total) {
            return Err(InputError::Refused(why));
        }
        sized
            .into_iter()
            .map(|(input, path, meta)| {
                let (sha256, size) = self
                    .store_input(&path, &meta, direct)
                    .map_err(|e| InputError::Refused(format!("input {input}: {e}")))?;
                Ok(StagedFile {
                    path: input.clone(),
                    sha256,
                    size,
                })
            })
            .collect()
    }

    fn store_input(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        direct: bool,
    ) -> io::Result<(String, u64)> {
        let key = direct::key_of(meta);
        if let Some(sha) = self.memo.lock().expect("memo").get(&key).cloned() {
            if self.has_blob(&sha) || (direct && self.has_source(&sha, key)) {
                return Ok((sha, meta.len()));
            }
        }
        let (sha, size) = if direct && meta.len() >= direct::DIRECT_BYTES_MIN {
            self.list_direct(path, key)?
        } else {
            self.ingest(path, meta.len())?
        };
        let mut memo = self.memo.lock().expect("memo");
        if memo.len() >= INPUT_MEMO_MAX {
            memo.clear();
        }
        memo.insert(key, sha.clone());
        Ok((sha, size))
    }

    /// Copies a file into the blob store, named by the hash of what was copied;
    /// `len` is its size when listed (it may have changed since).
    fn ingest(&self, path: &Path, len: u64) -> io::Result<(String, u64)> {
        let root = self.blobs.root().to_path_buf();
        private_files::create_dir_all(&root)?;
        let (tmp, mut out) = TempFile::create(&root, true)?;
        let mut src = File::open(path)?;
        let mut h = Hasher::default();
        // A buffer the file's size (one byte more, so the second read sees its
        // end): a fresh 1 MiB one for each of 10,000 small inputs was an
        // mmap, page clearing and munmap a file.
        let want = usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1);
        let mut buf = vec![0u8; want.clamp(4096, STAGE_CHUNK_BYTES)];
        let mut size = 0u64;
        loop {
            let n = match io::Read::read(&mut src, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            size += n as u64;
        }
        let sha = h.finish();
        drop(out);
        self.settle(tmp, &sha)?;
        Ok((sha, size))
    }

    /// A copy of an input becomes blob `sha`, replacing one already there:
    /// not synced (the input itself is still in the task's directory), so a
    /// blob torn by a power loss is rewritten by the next staging of that
    /// input (the memo is empty after a restart) and never passes the
    /// agent's hash check meanwhile.
    fn settle(&self, tmp: TempFile, sha: &str) -> io::Result<()> {
        let blob = self.blob_path(sha);
        if let Some(dir) = blob.parent() {
            private_files::create_dir_all(dir)?;
        }
        fs::rename(tmp.disarm(), &blob)
    }

    /// Copies each uploaded output into `<cwd>/.scalable-stage/<attempt>/`, so
    /// the broker's promotion of a counted attempt finds it there. Each file
    /// is written beside its place and renamed: a partial file is never
    /// where an output goes. `declared` are the attempt's declared outputs.
    pub fn materialize(
        &self,
        cwd: &Path,
        attempt: AttemptId,
        declared: &[String],
        files: &[StagedFile],
    ) -> Result<(), String> {
        let total: u64 = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
        if let Some(why) = self.limits.attempt_refusal("outputs", total) {
            return Err(why);
        }
        let dir = stage_dir(cwd, attempt);
        for f in files {
            if !declared.contains(&f.path) {
                return Err(format!(
                    "{} is not a declared output of this attempt",
                    f.path
                ));
            }
            let blob = self.blob_path(&f.sha256);
            let dst = dir.join(&f.path);
            let parent = dst.parent().unwrap_or(&dir).to_path_buf();
            let copy = || -> io::Result<()> {
                fs::create_dir_all(&parent)?;
                let (tmp, _) = TempFile::create(&parent, false)?;
                let copied = fs::copy(&blob, tmp.path())?;
                if copied != f.size {
                    return Err(io::Error::other(format!(
                        "the stored blob has {copied} bytes, not {}",
                        f.size
                    )));
                }
                fs::rename(tmp.disarm(), &dst)
            };
            copy()
                .map_err(|e| format!("cannot stage output {} in {}: {e}", f.path, dir.display()))?;
        }
        self.tally.lock().expect("tally").remove(&attempt);
        Ok(())
    }

    /// `attempt`'s uploads so far are settled (a checkpoint snapshot was
    /// sealed): they no longer count against its bound.
    pub fn uploads_done(&self, attempt: AttemptId) {
        self.tally.lock().expect("tally").remove(&attempt);
    }

    /// Counts blob `sha256` of `size` bytes as uploaded by `attempt`; the
    /// refusal when that passes a bound.
    pub fn count_upload(&self, attempt: AttemptId, sha256: &str, size: u64) -> Result<(), String> {
        let name = format!("blob {}", &sha256[..12.min(sha256.len())]);
        if let Some(why) = self.limits.file_refusal("output", &name, size) {
            return Err(why);
        }
        let mut tally = self.tally.lock().expect("tally");
        if tally.len() >= ATTEMPT_TALLY_MAX && !tally.contains_key(&attempt) {
            tally.clear();
        }
        let up = tally.entry(attempt).or_default();
        // The same blob uploaded again counts once, at its latest size.
        let again = up.blobs.get(sha256).copied().unwrap_or(0);
        let others = up.total.saturating_sub(again);
        if let Some(why) = self
            .limits
            .attempt_refusal("outputs", others.saturating_add(size))
        {
            return Err(why);
        }
        up.blobs.insert(sha256.to_string(), size);
        up.total = others.saturating_add(size);
        Ok(())
    }
}

/// The blobs one attempt uploaded so far and their sum, kept as it grows:
/// summing the map at every upload made an attempt of 10,000 outputs
/// quadratic (a fifth of the broker's cycles in the staging bench).
#[derive(Default)]
struct Uploaded {
    blobs: HashMap<String, u64>,
    total: u64,
}

/// A hidden temporary file, removed unless disarmed.
pub(crate) struct TempFile(Option<PathBuf>);

impl TempFile {
    /// `private`: 0600, for a blob under the state dir. With the file open for
    /// writing (opening it again by name was a second path lookup a file).
    pub(crate) fn create(dir: &Path, private: bool) -> io::Result<(TempFile, File)> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".scalable-staging-{}-{n}", std::process::id()));
        let file = if private {
            private_files::create_new(&path)?
        } else {
            File::options().write(true).create_new(true).open(&path)?
        };
        Ok((TempFile(Some(path)), file))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.as_deref().expect("armed")
    }

    pub(crate) fn disarm(mut self) -> PathBuf {
        self.0.take().expect("armed")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}
