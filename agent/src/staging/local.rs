//! The agent's disk side of a transfer: what it reads and writes while the
//! bytes move, on blocking threads, so the agent's one runtime thread only
//! moves packets.
//!
//! Owns: a download's sink (a small file held in memory and written once
//! verified; a large one appended to its partial file by a writer thread that
//! hashes as it writes, so nothing is read twice) and an upload's source (a
//! small file read and hashed in one go; a large one hashed, then read ahead
//! by a reader thread). It must not touch the network nor decide retries.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use scalable_common::staging::{hash_file, resume_partial, Hasher, StagedFile, STAGE_CHUNK_BYTES};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Files up to this size move whole through memory: one blocking hop each
/// instead of an open, seeks, reads and a second hashing pass, which for
/// thousands of small files cost more than their bytes.
pub const SMALL_FILE_BYTES: u64 = 1 << 20;
/// Chunks queued between the network and a writer or reader thread.
const CHUNKS_QUEUED: usize = 64;

/// Runs blocking `f` off the runtime; a panic or a cancelled task is an I/O error.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Writes verified bytes to `partial` and renames it to `dest`; `false` when
/// they do not hash to `sha256` (nothing written).
pub fn write_verified(data: &[u8], sha256: &str, partial: &Path, dest: &Path) -> io::Result<bool> {
    if Hasher::digest(data) != sha256 {
        return Ok(false);
    }
    fs::write(partial, data)?;
    fs::rename(partial, dest)?;
    Ok(true)
}

/// Writes each file of a batch (`data`: their bytes back to back, as long
/// as their sizes add up to) into `dir` at its path, verified as
/// [`write_verified`] does; the positions of those that did not match.
pub fn write_batch(files: &[StagedFile], data: &[u8], dir: &Path) -> io::Result<Vec<usize>> {
    let mut torn = Vec::new();
    let mut at = 0usize;
    let mut made: Option<PathBuf> = None;
    for (i, f) in files.iter().enumerate() {
        let end = at.saturating_add(f.size as usize).min(data.len());
        let bytes = &data[at..end];
        at = end;
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            if made.as_deref() != Some(parent) {
                fs::create_dir_all(parent)?;
                made = Some(parent.to_path_buf());
            }
        }
        let partial = super::transfer::partial_path(&dest);
        if bytes.len() as u64 != f.size || !write_verified(bytes, &f.sha256, &partial, &dest)? {
            torn.push(i);
        }
    }
    Ok(torn)
}

/// A large download under way: a writer thread appends what arrives to the
/// partial file and hashes it.
pub struct Writer {
    tx: mpsc::Sender<Vec<Bytes>>,
    done: JoinHandle<io::Result<(Hasher, u64)>>,
}

/// The partial file of a large download opened for appending, its existing
/// prefix hashed (a resumed download): the hasher and the bytes it has. A
/// partial longer than `size` is not a prefix: it starts over.
pub fn open_partial(partial: &Path, size: u64) -> io::Result<(File, Hasher, u64)> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)?;
    let (hasher, have) = resume_partial(&mut file, size, "download")?;
    Ok((file, hasher, have))
}

impl Writer {
    pub fn start(file: File, mut hasher: Hasher, mut have: u64) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(CHUNKS_QUEUED);
        let done = tokio::task::spawn_blocking(move || {
            // A break loses at most this buffer: the file stays a prefix.
            let mut out = BufWriter::with_capacity(STAGE_CHUNK_BYTES, file);
            while let Some(chunks) = rx.blocking_recv() {
                for chunk in chunks {
                    out.write_all(&chunk)?;
                    hasher.update(&chunk);
                    have += chunk.len() as u64;
                }
            }
            out.flush()?;
            Ok((hasher, have))
        });
        Writer { tx, done }
    }

    /// Queues bytes (the network's chunks of a packet or so, handed over
    /// many at a time: one hand-over, one wake of the writer, each); an
    /// error means the writer stopped (see [`Writer::finish`]).
    pub async fn write(&self, chunks: Vec<Bytes>) -> Result<(), ()> {
        self.tx.send(chunks).await.map_err(|_| ())
    }

    /// Everything queued is written: the hasher and the partial file's length.
    pub async fn finish(self) -> io::Result<(Hasher, u64)> {
        drop(self.tx);
        self.done.await.map_err(io::Error::other)?
    }
}

/// What an upload sends: a small file's bytes, or a large file by path.
pub enum Source {
    Memory(Bytes),
    File(PathBuf),
}

/// SHA-256, size and source of a file to upload (one blocking pass for a
/// small file; a hashing pass for a large one, which is read again to send).
pub fn load(path: &Path) -> io::Result<(String, u64, Source)> {
    let mut f = File::open(path)?;
    if f.metadata()?.len() <= SMALL_FILE_BYTES {
        let mut data = Vec::new();
        (&mut f).take(SMALL_FILE_BYTES + 1).read_to_end(&mut data)?;
        if data.len() as u64 <= SMALL_FILE_BYTES {
            let size = data.len() as u64;
            return Ok((
                Hasher::digest(&data),
                size,
                Source::Memory(Bytes::from(data)),
            ));
        }
    }
    drop(f);
    let (sha, size) = hash_file(path)?;
    Ok((sha, size, Source::File(path.to_path_buf())))
}

/// The size of each path that is a regular file (`None`: anything else,
/// which the upload of that file alone reports).
pub fn sizes(paths: &[PathBuf]) -> Vec<Option<u64>> {
    paths
        .iter()
        .map(|p| {
            fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .collect()
}

/// Reads `len` bytes of `path` from `from` on a reader thread, in chunks of
/// [`STAGE_CHUNK_BYTES`]; a file that ends early ends the stream short.
pub fn read_ahead(path: PathBuf, from: u64, len: u64) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED.min(8));
    tokio::task::spawn_blocking(move || {
        let read = || -> io::Result<()> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(from))?;
            let mut f = f.take(len);
            loop {
                let mut buf = vec![0u8; STAGE_CHUNK_BYTES];
                let n = read_full(&mut f, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the upload stopped
                }
            }
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Fills `buf` as far as the reader goes.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        Hasher::digest(data)
    }

    #[tokio::test]
    async fn a_resumed_download_hashes_its_prefix_and_what_follows() {
        let d = tempfile::tempdir().unwrap();
        let partial = d.path().join("f.part");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&partial, &data[..1_000_000]).unwrap();
        let (file, hasher, have) = open_partial(&partial, data.len() as u64).unwrap();
        assert_eq!(have, 1_000_000);
        let w = Writer::start(file, hasher, have);
        for c in data[1_000_000..].chunks(70_000) {
            w.write(vec![Bytes::copy_from_slice(c)]).await.unwrap();
        }
        let (h, n) = w.finish().await.unwrap();
        assert_eq!((h.finish(), n), (sha(&data), data.len() as u64));
        assert_eq!(fs::read(&partial).unwrap(), data);
        // Longer than the blob: not a prefix, starts over.
        let (_, _, have) = open_partial(&partial, 10).unwrap();
        assert_eq!(have, 0);
    }

    #[tokio::test]
    async fn small_files_are_loaded_whole_and_large_ones_read_ahead() {
        let d = tempfile::tempdir().unwrap();
        let small = d.path().join("s");
        fs::write(&small, b"abc").unwrap();
        let (h, n, src) = load(&small).unwrap();
        assert_eq!((h, n), (sha(b"abc"), 3));
        assert!(matches!(src, Source::Memory(b) if &b[..] == b"abc"));
        let big = d.path().join("b");
        let data = vec![5u8; (SMALL_FILE_BYTES + 10) as usize];
        fs::write(&big, &data).unwrap();
        let (h, n, src) = load(&big).unwrap();
        assert_eq!((h, n), (sha(&data), data.len() as u64));
        assert!(matches!(src, Source::File(_)));
        let mut rx = read_ahead(big, 7, n - 7);
        let mut got = Vec::new();
        while let Some(c) = rx.recv().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, data[7..]);
    }

    #[test]
    fn only_verified_bytes_are_written() {
        let d = tempfile::tempdir().unwrap();
        let (p, dest) = (d.path().join("p"), d.path().join("dest"));
        assert!(!write_verified(b"evil", &sha(b"good"), &p, &dest).unwrap());
        assert!(!dest.exists() && !p.exists());
        assert!(write_verified(b"good", &sha(b"good"), &p, &dest).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"good");
    }
}
