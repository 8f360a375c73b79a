//! The content-addressed blob store of cached outputs under `<state>/cache`:
//! saving a task's declared outputs into it and restoring them into a task's
//! directory.
//!
//! Owns the blob files, their names and modes (0600 files in 0700
//! directories) and where a restore may write (see [`super::outputs`]). Must
//! not read or write the `cache_entries` table.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use scalable_common::private_files;

use super::{hash_file, hex, CacheError, READ_CHUNK_BYTES};
use crate::output_roots::OutputRoots;

/// One declared output saved in the blob store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedOutput {
    /// The path as declared (relative paths are relative to the task's cwd).
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A content-addressed store of output files: a file with SHA-256 `abcd…`
/// lives at `root/ab/cd…`. Blobs are written to a temporary file and renamed
/// into place, so a blob that exists is complete; restoring checks the content
/// against the name anyway (a torn write after a crash is caught, not copied).
///
/// Outputs must be files: a declared output that is a directory is refused
/// with `output P is a directory; cache supports files`, and such a task is
/// simply not cached. Restored files get the default mode (the executable bit
/// is not kept). Blobs are 0600 in 0700 directories, like everything under
/// the state dir.
///
/// An output is saved from, and restored to, only a place [`OutputRoots`]
/// allows: inside the task's directory or under a root of the broker's
/// manifest. Anything else is refused (`CacheError::OutputOutside`) before a
/// file is read or written.
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
    output_roots: OutputRoots,
}

impl Blobs {
    /// The broker passes `<state_dir>/cache`; it is created on first save.
    /// Outputs are confined to each task's own directory.
    pub fn new(root: impl Into<PathBuf>) -> Blobs {
        Blobs {
            root: root.into(),
            output_roots: OutputRoots::default(),
        }
    }

    /// Also allows outputs under these roots (the broker's manifest's).
    pub fn with_output_roots(mut self, output_roots: OutputRoots) -> Blobs {
        self.output_roots = output_roots;
        self
    }

    /// Where output `declared` of a task in `cwd` is, if it may be touched.
    fn place(&self, cwd: &Path, declared: &str) -> Result<PathBuf, CacheError> {
        self.output_roots
            .check(cwd, declared)
            .map_err(|reason| CacheError::OutputOutside { reason })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        let (dir, rest) = sha256.split_at(2.min(sha256.len()));
        self.root.join(dir).join(rest)
    }

    /// Whether a blob with this hash is stored (false for anything that is
    /// not 64 lowercase hex digits).
    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256_hex(sha256) && self.blob_path(sha256).is_file()
    }

    /// Copies each declared output (relative to `cwd`) into the store, hashing
    /// it while copying, so the name is the hash of exactly what was stored.
    /// A blob already present is kept and the copy discarded.
    pub fn save_outputs(
        &self,
        cwd: &Path,
        outputs: &[String],
    ) -> Result<Vec<SavedOutput>, CacheError> {
        let mut saved = Vec::with_capacity(outputs.len());
        for declared in outputs {
            let out_err = |source: io::Error| {
                if source.kind() == io::ErrorKind::NotFound {
                    CacheError::OutputMissing {
                        path: declared.clone(),
                    }
                } else {
                    CacheError::Output {
                        path: declared.clone(),
                        source,
                    }
                }
            };
            let full = self.place(cwd, declared)?;
            if fs::metadata(&full).map_err(out_err)?.is_dir() {
                return Err(CacheError::OutputIsDirectory {
                    path: declared.clone(),
                });
            }
            let mut src = File::open(&full).map_err(out_err)?;
            private_files::create_dir_all(&self.root).map_err(|source| CacheError::Blob {
                path: self.root.clone(),
                source,
            })?;
            let (tmp_path, mut tmp) =
                create_temp(&self.root, true).map_err(|source| CacheError::Blob {
                    path: self.root.clone(),
                    source,
                })?;
            let guard = RemoveOnDrop(Some(tmp_path.clone()));
            let (sha256, bytes) = match copy_hashing(&mut src, &mut tmp) {
                Ok(x) => x,
                Err(CopyError::Read(source)) => return Err(out_err(source)),
                Err(CopyError::Write(source)) => {
                    return Err(CacheError::Blob {
                        path: tmp_path,
                        source,
                    })
                }
            };
            let blob = self.blob_path(&sha256);
            let blob_err = |source| CacheError::Blob {
                path: blob.clone(),
                source,
            };
            if !blob.is_file() {
                tmp.sync_all().map_err(blob_err)?;
                drop(tmp);
                if let Some(dir) = blob.parent() {
                    private_files::create_dir_all(dir).map_err(blob_err)?;
                }
                fs::rename(&tmp_path, &blob).map_err(blob_err)?;
                guard.disarm();
            }
            saved.push(SavedOutput {
                path: declared.clone(),
                sha256,
                bytes,
            });
        }
        Ok(saved)
    }

    /// Puts each saved output back at `cwd/path`. A file that already has the
    /// right content is left alone (not rewritten, its mtime unchanged);
    /// otherwise the blob is copied to a temporary file beside the target,
    /// checked against its hash and renamed into place (parents are created).
    /// Returns how many files were written.
    pub fn restore_outputs(&self, cwd: &Path, saved: &[SavedOutput]) -> Result<u32, CacheError> {
        let mut restored = 0u32;
        for out in saved {
            let target = self.place(cwd, &out.path)?;
            let out_err = |source| CacheError::Output {
                path: out.path.clone(),
                source,
            };
            match fs::metadata(&target) {
                Ok(m) if m.is_dir() => {
                    return Err(CacheError::OutputIsDirectory {
                        path: out.path.clone(),
                    })
                }
                Ok(m) if m.len() == out.bytes => {
                    if hash_file(&target).map_err(out_err)? == out.sha256 {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(out_err(e)),
            }
            let blob = self.blob_path(&out.sha256);
            if !is_sha256_hex(&out.sha256) {
                // Only ever from a damaged row: never let it name a path.
                return Err(CacheError::BlobMissing { path: blob });
            }
            let mut src = File::open(&blob).map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    CacheError::BlobMissing { path: blob.clone() }
                } else {
                    CacheError::Blob {
                        path: blob.clone(),
                        source,
                    }
                }
            })?;
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            fs::create_dir_all(&dir).map_err(out_err)?;
            let (tmp_path, mut tmp) = create_temp(&dir, false).map_err(out_err)?;
            let guard = RemoveOnDrop(Some(tmp_path.clone()));
            let (sha256, _) = match copy_hashing(&mut src, &mut tmp) {
                Ok(x) => x,
                Err(CopyError::Read(source)) => {
                    return Err(CacheError::Blob { path: blob, source })
                }
                Err(CopyError::Write(source)) => return Err(out_err(source)),
            };
            if sha256 != out.sha256 {
                // A torn or tampered blob: never restore it, and drop it so the
                // next successful run stores a good copy.
                let _ = fs::remove_file(&blob);
                return Err(CacheError::BlobCorrupt { path: blob });
            }
            drop(tmp);
            fs::rename(&tmp_path, &target).map_err(out_err)?;
            guard.disarm();
            restored += 1;
        }
        Ok(restored)
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `src` into `dst` in chunks; returns the SHA-256 and length of what
/// was copied.
fn copy_hashing(src: &mut File, dst: &mut File) -> Result<(String, u64), CopyError> {
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut bytes = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        ctx.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(CopyError::Write)?;
        bytes += n as u64;
    }
    dst.flush().map_err(CopyError::Write)?;
    Ok((hex(ctx.finish().as_ref()), bytes))
}

/// A new, exclusively created hidden file in `dir`, named so that concurrent
/// savers (threads or broker processes) never share one; `private`: 0600 (a
/// blob), else the default mode (a restored output in the user's directory).
fn create_temp(dir: &Path, private: bool) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".scalable-tmp-{}-{n}", std::process::id()));
        let created = if private {
            private_files::create_new(&path)
        } else {
            OpenOptions::new().write(true).create_new(true).open(&path)
        };
        match created {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Removes a temporary file on every early return.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}
