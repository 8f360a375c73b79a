//! Many small blobs at once (protocol 9's `GetBatch`/`PutBatch`): read
//! whole for a download, and verified and stored together for an upload,
//! so ten thousand files of a few kilobytes cost a few hundred file calls
//! each, not a blocking hop, a partial file and a flush each.
//!
//! Owns: reading a batch of blobs within [`STAGE_BATCH_BYTES_MAX`] and
//! storing a batch of uploaded blobs (each verified against its name before
//! it becomes a blob, their data flushed together before any is renamed in).
//! It must not read the network nor decide who may fetch or upload.

use std::fs;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use scalable_common::private_files;
use scalable_common::staging::{BlobRef, Hasher, STAGE_BATCH_BYTES_MAX};

use super::{StagingStore, TempFile};

/// Threads that flush one batch's files at once: concurrent flushes share
/// the filesystem's journal commits, one at a time they each wait for one.
const FLUSH_THREADS: usize = 8;

impl StagingStore {
    /// The whole bytes of each blob, in order; an error when one is missing
    /// or they add up to more than a batch may hold.
    pub fn read_batch(&self, sha256s: &[String]) -> io::Result<Vec<Bytes>> {
        let mut files = Vec::with_capacity(sha256s.len());
        let mut total = 0u64;
        for sha in sha256s {
            let f = fs::File::open(self.blob_path(sha))
                .map_err(|e| io::Error::new(e.kind(), format!("blob {sha}: {e}")))?;
            let size = f.metadata()?.len();
            total = total.saturating_add(size);
            if total > STAGE_BATCH_BYTES_MAX {
                return Err(io::Error::other(format!(
                    "the batch is over {STAGE_BATCH_BYTES_MAX} bytes at blob {sha}"
                )));
            }
            files.push((f, size));
        }
        files
            .into_iter()
            .map(|(f, size)| {
                let mut data = Vec::with_capacity(size as usize);
                f.take(size).read_to_end(&mut data)?;
                Ok(Bytes::from(data))
            })
            .collect()
    }

    /// Which of `files` are not stored yet (their positions).
    pub fn missing(&self, files: &[BlobRef]) -> Vec<u32> {
        (0..files.len() as u32)
            .filter(|&i| !self.has_blob(&files[i as usize].sha256))
            .collect()
    }

    /// Stores uploaded blobs: `data` is their bytes back to back. Each is
    /// checked against its SHA-256 first (a mismatch stores none of them),
    /// written beside the blobs, flushed with the others, then renamed to
    /// its name.
    pub fn store_batch(self: &Arc<Self>, files: &[BlobRef], data: &[u8]) -> Result<(), String> {
        let total: u64 = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
        if total != data.len() as u64 {
            return Err(format!(
                "the batch sent {} bytes, not the {total} it announced",
                data.len()
            ));
        }
        let mut slices = Vec::with_capacity(files.len());
        let mut at = 0usize;
        for f in files {
            let bytes = &data[at..at + f.size as usize];
            at += f.size as usize;
            if Hasher::digest(bytes) != f.sha256 {
                return Err(format!(
                    "the uploaded bytes of blob {} do not match their SHA-256",
                    &f.sha256[..12]
                ));
            }
            slices.push(bytes);
        }
        self.write_verified(files, &slices)
            .map_err(|e| format!("cannot store a batch of {} blobs: {e}", files.len()))
    }

    fn write_verified(&self, files: &[BlobRef], slices: &[&[u8]]) -> io::Result<()> {
        private_files::create_dir_all(&self.partial)?;
        let mut written = Vec::with_capacity(files.len());
        for bytes in slices {
            let (tmp, mut out) = TempFile::create(&self.partial, true)?;
            out.write_all(bytes)?;
            written.push((tmp, out));
        }
        flush_all(written.iter().map(|(_, f)| f).collect())?;
        for ((tmp, _), f) in written.into_iter().zip(files) {
            let blob = self.blob_path(&f.sha256);
            if let Some(dir) = blob.parent() {
                private_files::create_dir_all(dir)?;
            }
            fs::rename(tmp.disarm(), &blob)?;
        }
        Ok(())
    }
}

/// `fdatasync` of every file, from a few threads at once.
fn flush_all(files: Vec<&fs::File>) -> io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let per = files.len().div_ceil(FLUSH_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|group| s.spawn(move || group.iter().try_for_each(|f| f.sync_data())))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("a flush panicked")))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::Limits;

    fn sha(data: &[u8]) -> String {
        Hasher::digest(data)
    }

    fn store(dir: &std::path::Path) -> Arc<StagingStore> {
        let limits = Limits {
            file_bytes_max: 1 << 20,
            attempt_bytes_max: 2 << 20,
        };
        Arc::new(StagingStore::new(&dir.join("cache"), limits))
    }

    #[test]
    fn a_batch_is_stored_only_when_every_blob_matches_its_name() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (a, b) = (b"first".to_vec(), b"second one".to_vec());
        let refs = vec![
            BlobRef {
                sha256: sha(&a),
                size: a.len() as u64,
            },
            BlobRef {
                sha256: sha(&b),
                size: b.len() as u64,
            },
        ];
        assert_eq!(s.missing(&refs), vec![0, 1]);
        let bad = [&a[..], b"second 0ne"].concat();
        let err = s.store_batch(&refs, &bad).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
        assert_eq!(s.missing(&refs), vec![0, 1], "nothing stored");
        let short = s.store_batch(&refs, &a).unwrap_err();
        assert!(short.contains("not the 15"), "{short}");
        s.store_batch(&refs, &[&a[..], &b[..]].concat()).unwrap();
        assert!(s.missing(&refs).is_empty());
        let read = s.read_batch(&[refs[1].sha256.clone(), refs[0].sha256.clone()]);
        assert_eq!(read.unwrap(), vec![Bytes::from(b), Bytes::from(a)]);
        let none = s.read_batch(&["0".repeat(64)]).unwrap_err();
        assert!(none.to_string().contains("blob 0000"), "{none}");
        let leftovers = fs::read_dir(d.path().join("cache/partial"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "no temporary file is left");
    }
}
