//! Small files in batches (protocol 9's `GetBatch`/`PutBatch`): the files
//! of an attempt up to [`STAGE_BATCH_FILE_BYTES`] move many to a stream,
//! whole, so ten thousand inputs of ten kilobytes cost a few dozen streams,
//! round trips and blocking hops instead of ten thousand of each.
//!
//! Owns: which files go together ([`plan`]) and one batch's exchange, tried
//! again across broken connections as a whole. Every file is still checked
//! against its SHA-256 (a download that does not match is fetched again
//! alone, as [`Link::get_file`] does). It must not decide what to stage.

use std::path::PathBuf;

use bytes::Bytes;
use scalable_common::frame::read_frame;
use scalable_common::protocol::AttemptId;
use scalable_common::staging::{
    is_plain_relative, BlobRef, StageReply, StageRequest, StagedFile, STAGE_BATCH_BYTES_MAX,
    STAGE_BATCH_FILES_MAX, STAGE_BATCH_FILE_BYTES, STAGE_HEADER_BYTES_MAX,
};

use super::local::{self, Source};
use super::transfer::{ask, broken, local_error, unexpected, Link, TransferError};

/// Files of one batch, at most (within the protocol's cap).
const BATCH_FILES: usize = 256;
/// Bytes of one batch, about: several batches are in flight at once, each
/// held in memory on both sides.
const BATCH_BYTES: u64 = 2 << 20;

const _: () = assert!(BATCH_FILES <= STAGE_BATCH_FILES_MAX && BATCH_BYTES <= STAGE_BATCH_BYTES_MAX);

/// The files (by position) that move together: small files (a known size
/// up to [`STAGE_BATCH_FILE_BYTES`]) grouped in their order, every other
/// file alone. A group of one moves as a single file.
pub fn plan(sizes: &[Option<u64>]) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut bytes = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        match size {
            Some(n) if *n <= STAGE_BATCH_FILE_BYTES => {
                if !batch.is_empty() && (batch.len() >= BATCH_FILES || bytes + n > BATCH_BYTES) {
                    groups.push(std::mem::take(&mut batch));
                    bytes = 0;
                }
                batch.push(i);
                bytes += n;
            }
            _ => groups.push(vec![i]),
        }
    }
    if !batch.is_empty() {
        groups.push(batch);
    }
    groups
}

/// Fetches `files` (small, granted) into `dir` in one batch; returns the bytes.
pub async fn get_batch(
    mut link: Link,
    attempt: AttemptId,
    files: Vec<StagedFile>,
    dir: PathBuf,
) -> Result<u64, TransferError> {
    if let Some(f) = files.iter().find(|f| !is_plain_relative(&f.path)) {
        return Err(TransferError::Refused(format!(
            "{} is not a relative path",
            f.path
        )));
    }
    let data = link
        .retrying("fetching inputs", |conn| fetch(conn, attempt, &files))
        .await?;
    let (listed, into) = (files.clone(), dir.clone());
    let torn = local::blocking(move || local::write_batch(&listed, &data, &into))
        .await
        .map_err(|e| local_error(&dir, e))?;
    // Torn or changed underneath: each fetched again alone (verified there).
    for i in torn {
        let f = &files[i];
        link.get_file(attempt, f, &dir.join(&f.path)).await?;
    }
    Ok(files.iter().map(|f| f.size).sum())
}

/// One `GetBatch`: the bytes of every file, back to back.
async fn fetch(
    conn: quinn::Connection,
    attempt: AttemptId,
    files: &[StagedFile],
) -> Result<Vec<u8>, TransferError> {
    let req = StageRequest::GetBatch {
        attempt,
        sha256s: files.iter().map(|f| f.sha256.clone()).collect(),
    };
    let (_send, mut recv, reply) = ask(&conn, &req).await?;
    let expected: Vec<u64> = files.iter().map(|f| f.size).collect();
    match reply {
        StageReply::Blobs { sizes } if sizes == expected => {}
        StageReply::Blobs { .. } => {
            return Err(TransferError::Refused(
                "the broker's blobs of a batch of inputs have other sizes than listed".into(),
            ))
        }
        other => return Err(unexpected(other)),
    }
    let want: u64 = expected.iter().sum();
    let mut data = Vec::with_capacity(want as usize);
    while (data.len() as u64) < want {
        let left = (want - data.len() as u64) as usize;
        match recv.read_chunk(left, true).await.map_err(broken)? {
            Some(c) => data.extend_from_slice(&c.bytes),
            None => break,
        }
    }
    if (data.len() as u64) < want {
        return Err(broken("a batch of inputs broke off"));
    }
    Ok(data)
}

/// Uploads `files` (`(path, declared)`, small) in one batch, hashed from
/// one read each; a file that grew past a batch meanwhile goes alone.
pub async fn put_batch(
    mut link: Link,
    attempt: AttemptId,
    files: Vec<(PathBuf, String)>,
) -> Result<Vec<StagedFile>, TransferError> {
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let loaded = local::blocking(move || {
        paths
            .iter()
            .map(|p| local::load(p).map_err(|e| (p.clone(), e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(p, e)| std::io::Error::other(local_error(&p, e).to_string()))
    })
    .await
    .map_err(|e| TransferError::Refused(e.to_string()))?;
    let total: u64 = loaded.iter().map(|(_, n, _)| *n).sum();
    let whole: Vec<(String, u64, Bytes)> = loaded
        .into_iter()
        .filter_map(|(sha, size, source)| match source {
            Source::Memory(bytes) => Some((sha, size, bytes)),
            Source::File(_) => None,
        })
        .collect();
    if whole.len() < files.len() || total > STAGE_BATCH_BYTES_MAX {
        let mut out = Vec::with_capacity(files.len());
        for (path, declared) in &files {
            out.push(link.put_file(attempt, path, declared).await?);
        }
        return Ok(out);
    }
    let mut refs = Vec::with_capacity(files.len());
    let mut data = Vec::with_capacity(files.len());
    let mut staged = Vec::with_capacity(files.len());
    for ((sha256, size, bytes), (_, declared)) in whole.into_iter().zip(&files) {
        refs.push(BlobRef {
            sha256: sha256.clone(),
            size,
        });
        data.push(bytes);
        staged.push(StagedFile {
            path: declared.clone(),
            sha256,
            size,
        });
    }
    link.retrying("uploading outputs", |conn| {
        send(conn, attempt, &refs, &data)
    })
    .await?;
    Ok(staged)
}

/// One `PutBatch`: the broker says which it needs, those follow back to back.
async fn send(
    conn: quinn::Connection,
    attempt: AttemptId,
    refs: &[BlobRef],
    data: &[Bytes],
) -> Result<(), TransferError> {
    let req = StageRequest::PutBatch {
        attempt,
        files: refs.to_vec(),
    };
    let (mut send, mut recv, reply) = ask(&conn, &req).await?;
    let positions = match reply {
        StageReply::Need { positions } => positions,
        other => return Err(unexpected(other)),
    };
    let mut chunks = Vec::with_capacity(positions.len());
    for p in positions {
        match data.get(p as usize) {
            Some(b) => chunks.push(b.clone()),
            None => {
                return Err(TransferError::Refused(format!(
                    "the broker asked for file {p} of a batch of {}",
                    data.len()
                )))
            }
        }
    }
    send.write_all_chunks(&mut chunks).await.map_err(broken)?;
    send.finish().map_err(broken)?;
    match read_frame::<_, StageReply>(&mut recv, STAGE_HEADER_BYTES_MAX).await {
        Ok(Some(StageReply::Stored)) => Ok(()),
        Ok(Some(other)) => Err(unexpected(other)),
        Ok(None) => Err(broken("the broker closed a batch upload without a word")),
        Err(e) => Err(broken(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_go_together_in_order_and_large_ones_alone() {
        let big = Some(STAGE_BATCH_FILE_BYTES + 1);
        let small = Some(10_240);
        let sizes = vec![small, big, small, None, small];
        assert_eq!(plan(&sizes), vec![vec![1], vec![3], vec![0, 2, 4]]);
        let many = vec![Some(1_000); BATCH_FILES + 1];
        let groups = plan(&many);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), BATCH_FILES);
        let by_bytes = plan(&vec![small; 300]);
        assert_eq!(by_bytes[0].len() as u64, BATCH_BYTES / 10_240);
        let heavy = vec![Some(STAGE_BATCH_FILE_BYTES); 20];
        assert!(plan(&heavy)
            .iter()
            .all(|g| g.len() as u64 * STAGE_BATCH_FILE_BYTES <= BATCH_BYTES));
    }
}
