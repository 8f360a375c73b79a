//! One upload of a blob into the broker's store: received into
//! `<state>/cache/partial/<sha256>`, which survives a broker or agent restart
//! (the next upload of the same content goes on from its length), hashed as
//! it grows and renamed to the blob only when the whole file matches its
//! name.
//!
//! Owns: the partial files and the one-upload-per-blob rule. It must not
//! read the network (the shell hands it bytes) nor decide who may upload.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use scalable_common::private_files;
use scalable_common::staging::{resume_partial, Hasher};

use super::StagingStore;

/// How an upload starts.
pub enum Begin {
    /// The blob is stored already: nothing to send.
    Stored,
    /// Another upload of the same blob is under way: ask again later.
    Busy,
    /// Send the bytes from `Partial::have` on.
    Resume(Box<Partial>),
}

/// An upload under way. Dropping it ends the upload and keeps what arrived.
pub struct Partial {
    store: Arc<StagingStore>,
    sha256: String,
    size: u64,
    path: PathBuf,
    file: File,
    hasher: Hasher,
    pub have: u64,
    /// Where writeback of the bytes written so far was started up to.
    written_back: u64,
}

/// Writeback of an upload's bytes is started every this many bytes, so the
/// flush before it becomes a blob waits for the last stretch only, not for
/// a gigabyte the disk could have been writing while the bytes arrived.
const WRITEBACK_BYTES: u64 = 8 << 20;

impl StagingStore {
    /// Starts (or resumes) the upload of blob `sha256` of `size` bytes.
    pub fn begin_upload(self: &Arc<Self>, sha256: &str, size: u64) -> io::Result<Begin> {
        if self.has_blob(sha256) {
            return Ok(Begin::Stored);
        }
        if !self
            .uploading
            .lock()
            .expect("uploading")
            .insert(sha256.to_string())
        {
            return Ok(Begin::Busy);
        }
        // From here the claim is released by the `Partial`'s drop, or below.
        let claim = Claim(self.clone(), Some(sha256.to_string()));
        private_files::create_dir_all(&self.partial)?;
        let path = self.partial.join(sha256);
        let mut file = match private_files::create_new(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                File::options().read(true).write(true).open(&path)?
            }
            Err(e) => return Err(e),
        };
        let (hasher, have) = resume_partial(&mut file, size, "upload")?;
        claim.release_to_partial();
        Ok(Begin::Resume(Box::new(Partial {
            store: self.clone(),
            sha256: sha256.to_string(),
            size,
            path,
            file,
            hasher,
            have,
            written_back: have,
        })))
    }
}

impl Partial {
    /// Appends bytes that arrived; more than the announced size is refused.
    pub fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if self.have + data.len() as u64 > self.size {
            return Err(format!(
                "the upload sent more than the {} bytes it announced",
                self.size
            ));
        }
        self.file
            .write_all(data)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.hasher.update(data);
        self.have += data.len() as u64;
        if self.have - self.written_back >= WRITEBACK_BYTES {
            start_writeback(&self.file, self.written_back, self.have - self.written_back);
            self.written_back = self.have;
        }
        Ok(())
    }

    /// The upload is complete: verified, it becomes the blob. A mismatch
    /// throws the partial file away (the next upload starts over).
    pub fn finish(mut self) -> Result<(), String> {
        if self.have != self.size {
            return Err(format!(
                "the upload ended at {} of {} bytes",
                self.have, self.size
            ));
        }
        let hasher = std::mem::take(&mut self.hasher);
        if hasher.finish() != self.sha256 {
            let _ = fs::remove_file(&self.path);
            return Err("the uploaded bytes do not match their SHA-256".into());
        }
        let blob = self.store.blob_path(&self.sha256);
        let settle = || -> io::Result<()> {
            self.file.sync_all()?;
            if let Some(dir) = blob.parent() {
                private_files::create_dir_all(dir)?;
            }
            fs::rename(&self.path, &blob)
        };
        settle().map_err(|e| format!("cannot store blob {}: {e}", blob.display()))
    }
}

/// Starts writing `len` bytes of `file` from `from` to disk without waiting
/// (Linux `sync_file_range`); only a head start for the flush that follows,
/// so an error here is left to that flush.
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.store
            .uploading
            .lock()
            .expect("uploading")
            .remove(&self.sha256);
    }
}

/// The claim on a blob's upload until a `Partial` holds it.
struct Claim(Arc<StagingStore>, Option<String>);

impl Claim {
    fn release_to_partial(mut self) {
        self.1 = None;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(sha) = self.1.take() {
            self.0.uploading.lock().expect("uploading").remove(&sha);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::Limits;

    fn store(dir: &std::path::Path) -> Arc<StagingStore> {
        Arc::new(StagingStore::new(
            &dir.join("cache"),
            Limits {
                file_bytes_max: 1 << 20,
                attempt_bytes_max: 2 << 20,
            },
        ))
    }

    fn sha(data: &[u8]) -> String {
        Hasher::digest(data)
    }

    #[test]
    fn an_interrupted_upload_resumes_and_becomes_the_blob_only_when_verified() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let data = vec![7u8; 300_000];
        let h = sha(&data);
        let Begin::Resume(mut p) = s.begin_upload(&h, data.len() as u64).unwrap() else {
            panic!("a fresh upload starts")
        };
        assert!(matches!(s.begin_upload(&h, 1).unwrap(), Begin::Busy));
        p.write(&data[..100_000]).unwrap();
        drop(p); // the agent went away mid-upload
        assert!(!s.has_blob(&h), "no partial blob");
        let Begin::Resume(mut p) = s.begin_upload(&h, data.len() as u64).unwrap() else {
            panic!("resumes")
        };
        assert_eq!(p.have, 100_000);
        p.write(&data[100_000..]).unwrap();
        assert!(p.write(b"x").is_err(), "nothing past the announced size");
        p.finish().unwrap();
        assert!(s.has_blob(&h));
        assert_eq!(fs::read(s.blob_path(&h)).unwrap(), data);
        assert!(matches!(s.begin_upload(&h, 1).unwrap(), Begin::Stored));
    }

    #[test]
    fn bytes_that_do_not_match_their_name_never_become_a_blob() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let h = sha(b"good");
        let Begin::Resume(mut p) = s.begin_upload(&h, 4).unwrap() else {
            panic!()
        };
        p.write(b"evil").unwrap();
        assert!(p.finish().unwrap_err().contains("do not match"));
        assert!(!s.has_blob(&h));
        let Begin::Resume(p) = s.begin_upload(&h, 4).unwrap() else {
            panic!()
        };
        assert_eq!(p.have, 0, "the bad bytes were thrown away");
    }

    #[test]
    fn bounds_refuse_with_the_sizes_and_a_hint() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let big = s.count_upload(1, &a, 2 << 20).unwrap_err();
        assert!(
            big.contains("blob aaaaaaaaaaaa is 2M, over the staging limit of 1M a file"),
            "{big}"
        );
        assert!(big.contains("SCALABLE_STAGE_FILE_BYTES_MAX"), "{big}");
        s.count_upload(2, &a, 1 << 20).unwrap();
        s.count_upload(2, &b, 1 << 20).unwrap();
        s.count_upload(2, &b, 1 << 20)
            .expect("a retry of the same blob counts once");
        let sum = s.count_upload(2, &c, 1).unwrap_err();
        assert!(sum.contains("an attempt"), "{sum}");
    }

    #[test]
    fn inputs_are_stored_once_and_outputs_materialized_in_the_stage() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let cwd = d.path().join("task");
        fs::create_dir_all(cwd.join("data")).unwrap();
        fs::write(cwd.join("data/a.csv"), "1,2\n").unwrap();
        let inputs = vec!["data/a.csv".to_string()];
        let files = s.stage_inputs(&cwd, &inputs).unwrap();
        assert_eq!(files[0].sha256, sha(b"1,2\n"));
        assert!(s.has_blob(&files[0].sha256));
        assert_eq!(s.stage_inputs(&cwd, &inputs).unwrap(), files);
        assert_eq!(
            s.stage_inputs(&cwd, &["nope".into()]).unwrap_err(),
            super::super::InputError::Missing("nope".into())
        );
        assert!(matches!(
            s.stage_inputs(&cwd, &["/etc/passwd".into()]),
            Err(super::super::InputError::Refused(_))
        ));
        let out = StagedFileAlias {
            path: "out/r.csv".into(),
            sha256: files[0].sha256.clone(),
            size: 4,
        };
        s.materialize(&cwd, 9, &["out/r.csv".into()], std::slice::from_ref(&out))
            .unwrap();
        let staged = scalable_common::stage::stage_dir(&cwd, 9).join("out/r.csv");
        assert_eq!(fs::read(staged).unwrap(), b"1,2\n");
        let undeclared = s.materialize(&cwd, 9, &[], &[out]).unwrap_err();
        assert!(undeclared.contains("not a declared output"), "{undeclared}");
    }

    use scalable_common::staging::StagedFile as StagedFileAlias;
}
