//! Large inputs served from where they are: the first staging of an input of
//! at least [`DIRECT_BYTES_MIN`] hashes it (one read) instead of copying it
//! into the blob store before the agent may fetch it, and `Get` streams the
//! file in the task's directory; once a fetch from its start has sent bytes
//! whose SHA-256 is the listed one, the file is copied into the blob store
//! (the same dedup as before, off the agent's path). The agent checks every
//! byte against the hash, so an input changed meanwhile fails its check, and
//! here its copy is never stored under a name it does not match.
//!
//! Owns: which blobs are served from their source, and the copy after a
//! verified fetch. It must not read the network nor decide who may fetch.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use scalable_common::private_files;
use scalable_common::staging::Hasher;

use super::{StagingStore, TempFile};

/// Inputs this large (and larger) are served from their source until stored.
pub const DIRECT_BYTES_MIN: u64 = 4 << 20;
/// Sources remembered at most (as many as the input memo).
pub(super) const SOURCES_MAX: usize = 100_000;

/// What identifies a file's content without reading it: device, inode,
/// size and mtime (ns), as the input memo keys it.
pub(super) type FileKey = (u64, u64, u64, i64);

pub(super) fn key_of(meta: &fs::Metadata) -> FileKey {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
    )
}

/// A blob's bytes opened for a fetch: the stored blob, or its source.
pub struct Opened {
    pub file: File,
    pub size: u64,
    /// Set when this is the source of a blob not stored yet.
    pub source: Option<Source>,
}

/// The source of a blob served before it is stored.
pub struct Source {
    pub sha256: String,
    path: PathBuf,
    key: FileKey,
}

impl StagingStore {
    /// Hashes a large input and remembers where it is, without copying it.
    pub(super) fn list_direct(&self, path: &Path, key: FileKey) -> io::Result<(String, u64)> {
        let mut h = Hasher::default();
        let size = h.update_from(&mut File::open(path)?)?;
        let sha = h.finish();
        let mut sources = self.sources.lock().expect("sources");
        if sources.len() >= SOURCES_MAX {
            sources.clear();
        }
        sources.insert(sha.clone(), (path.to_path_buf(), key));
        Ok((sha, size))
    }

    /// Whether `sha256` is served from an unchanged source.
    pub(super) fn has_source(&self, sha256: &str, key: FileKey) -> bool {
        self.sources
            .lock()
            .expect("sources")
            .get(sha256)
            .is_some_and(|(_, k)| *k == key)
    }

    /// Blob `sha256` opened for reading: the stored one, else its source
    /// when that is unchanged since it was hashed.
    pub fn open_for_fetch(&self, sha256: &str) -> io::Result<Opened> {
        match File::open(self.blob_path(sha256)) {
            Ok(file) => {
                let size = file.metadata()?.len();
                return Ok(Opened {
                    file,
                    size,
                    source: None,
                });
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let found = self.sources.lock().expect("sources").get(sha256).cloned();
        let Some((path, key)) = found else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such blob"));
        };
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if key_of(&meta) != key {
            self.sources.lock().expect("sources").remove(sha256);
            return Err(io::Error::other(format!(
                "input {} changed after it was listed (hint: leave a job's inputs alone until it ends)",
                path.display()
            )));
        }
        Ok(Opened {
            file,
            size: meta.len(),
            source: Some(Source {
                sha256: sha256.to_string(),
                path,
                key,
            }),
        })
    }

    /// A fetch from the start of `source` sent bytes hashing to its name:
    /// the source is copied into the blob store, kept only if it is still
    /// the file that was hashed after the copy.
    pub fn store_served(&self, source: &Source) -> io::Result<()> {
        if self.has_blob(&source.sha256) {
            return Ok(());
        }
        let root = self.blobs.root().to_path_buf();
        private_files::create_dir_all(&root)?;
        let (tmp, _) = TempFile::create(&root, true)?;
        let copied = fs::copy(&source.path, tmp.path())?;
        let now = key_of(&fs::metadata(&source.path)?);
        if now != source.key || copied != source.key.2 {
            return Ok(()); // changed meanwhile: the copy is dropped
        }
        self.settle(tmp, &source.sha256)?;
        self.sources.lock().expect("sources").remove(&source.sha256);
        Ok(())
    }
}

/// Hashes what a fetch of a source sends, when it sends it from the start.
pub struct Tally {
    hasher: Hasher,
    bytes: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            hasher: Hasher::default(),
            bytes: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    /// Whether exactly the source's bytes went out, matching its name.
    pub fn matches(self, source: &Source) -> bool {
        self.bytes == source.key.2 && self.hasher.finish() == source.sha256
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::Limits;
    use std::io::Read;

    #[test]
    fn a_large_input_is_served_from_its_source_then_stored_once_verified() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits {
            file_bytes_max: 1 << 30,
            attempt_bytes_max: 1 << 30,
        };
        let s = StagingStore::new(&d.path().join("cache"), limits);
        let cwd = d.path().join("task");
        fs::create_dir_all(&cwd).unwrap();
        let data: Vec<u8> = (0..DIRECT_BYTES_MIN + 10)
            .map(|i| (i % 253) as u8)
            .collect();
        fs::write(cwd.join("big"), &data).unwrap();
        let files = s.list_inputs(&cwd, &["big".into()]).unwrap();
        let sha = files[0].sha256.clone();
        assert!(!s.has_blob(&sha), "listed without a copy");
        assert_eq!(s.list_inputs(&cwd, &["big".into()]).unwrap(), files);
        let mut opened = s.open_for_fetch(&sha).unwrap();
        let source = opened.source.take().expect("served from its source");
        let mut sent = Vec::new();
        opened.file.read_to_end(&mut sent).unwrap();
        let mut tally = Tally::new();
        tally.update(&sent[..10]);
        assert!(!Tally::new().matches(&source), "nothing sent is no match");
        tally.update(&sent[10..]);
        assert!(tally.matches(&source));
        s.store_served(&source).unwrap();
        assert_eq!(fs::read(s.blob_path(&sha)).unwrap(), data);
        assert!(s.open_for_fetch(&sha).unwrap().source.is_none());
        // A source changed after it was listed is not served.
        fs::write(cwd.join("big2"), &data[1..]).unwrap();
        let other = s.list_inputs(&cwd, &["big2".into()]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(cwd.join("big2"), b"changed").unwrap();
        let err = s.open_for_fetch(&other[0].sha256).err().unwrap();
        assert!(
            err.to_string().contains("changed after it was listed"),
            "{err}"
        );
    }
}
