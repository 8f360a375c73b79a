//! The broker's side of the S3 transport (`storage:`, issue 20): a task's
//! declared inputs, stored as blobs here, are put in the object store for the
//! agent to fetch; an attempt's outputs, which the agent put there, are
//! fetched back into the blob store (verified against their SHA-256) before
//! they are materialized in the attempt's stage, so the ordinary promotion
//! of the counted attempt puts them where a shared-filesystem run does.
//!
//! Owns: which blobs cross between this store and the object store. The
//! bytes move through [`ObjectStore`] (the `aws` CLI). Blocking; it must not
//! decide whose attempt it is nor touch the store or core.

use std::path::Path;

use scalable_common::object_store::{each_at_once, ObjectStore};
use scalable_common::private_files;
use scalable_common::staging::StagedFile;

use super::StagingStore;

impl StagingStore {
    /// Puts each staged input (a blob here) in the object store, unless it
    /// is there already.
    pub fn push_inputs(&self, os: &ObjectStore, files: &[StagedFile]) -> Result<(), String> {
        each_at_once(files, |f| {
            os.put(&self.blob_path(&f.sha256), &f.sha256, f.size)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// Fetches each output the agent put in the object store into the blob
    /// store (checked against its hash), after checking the size bounds.
    pub fn fetch_outputs(&self, os: &ObjectStore, files: &[StagedFile]) -> Result<(), String> {
        if let Some(why) = files
            .iter()
            .find_map(|f| self.limits.file_refusal("output", &f.path, f.size))
        {
            return Err(why);
        }
        let total: u64 = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
        if let Some(why) = self.limits.attempt_refusal("outputs", total) {
            return Err(why);
        }
        each_at_once(files, |f| {
            if self.has_blob(&f.sha256) {
                return Ok(());
            }
            let blob = self.blob_path(&f.sha256);
            let parent = blob.parent().unwrap_or(Path::new("."));
            private_files::create_dir_all(parent)
                .and_then(|()| private_files::create_dir_all(&self.partial))
                .map_err(|e| format!("cannot store output {}: {e}", f.path))?;
            let landing = self.partial.join(format!("s3-{}", f.sha256));
            os.get(&f.sha256, f.size, &landing)
                .map_err(|e| e.to_string())?;
            std::fs::rename(&landing, &blob)
                .map_err(|e| format!("cannot store output {}: {e}", f.path))
        })
    }
}
