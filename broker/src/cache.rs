//! The task cache (SPEC §5, `cache: true`): keys, the blob store of outputs,
//! and the `cache_entries` table.
//!
//! A key is a SHA-256 over four parts, each hashed on its own and kept in the
//! [`CacheKey`] so `why TASK` can say which part changed: the argv (order
//! matters), the image, the environment (sorted by name, so order does not) and
//! the content of every declared input. A successful attempt's declared outputs
//! are copied into a content-addressed [`Blobs`] store; a later task with the
//! same key is marked `cached` and gets those outputs restored instead of
//! running.
//!
//! Owns: the key encoding, the blob files under `<state_dir>/cache`, and the
//! SQL of the `cache_entries` table (the store calls these functions on its own
//! connection, so SQL still runs only on the store's writer thread). Must not:
//! change task state (the core decides what a hit means) or use tokio; file
//! hashing is blocking I/O, so callers run it off the async runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// Bytes read per `read` call when hashing or copying a file.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Directory inputs: deepest nesting walked (also what stops a symlink loop).
pub const INPUT_DIR_DEPTH_MAX: usize = 64;
/// Directory inputs: most entries (files and directories) hashed per input.
pub const INPUT_DIR_ENTRIES_MAX: usize = 100_000;

/// Every way computing a key, saving or restoring outputs can fail: one line,
/// naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("input {path}: does not exist")]
    InputMissing { path: String },
    #[error("input {path}: {source}")]
    Input { path: String, source: io::Error },
    #[error("input {path}: more than {INPUT_DIR_ENTRIES_MAX} entries; declare a smaller directory or the files")]
    InputTooLarge { path: String },
    #[error("input {path}: nested deeper than {INPUT_DIR_DEPTH_MAX} levels (a symlink loop?)")]
    InputTooDeep { path: String },
    #[error("input {path}: not a regular file or directory")]
    InputNotRegular { path: String },
    #[error("{reason}")]
    OutputOutside { reason: String },
    #[error("output {path}: does not exist")]
    OutputMissing { path: String },
    #[error("output {path} is a directory; cache supports files")]
    OutputIsDirectory { path: String },
    #[error("output {path}: {source}")]
    Output { path: String, source: io::Error },
    #[error("cache blob {}: missing (was the cache directory cleaned?)", path.display())]
    BlobMissing { path: PathBuf },
    #[error("cache blob {}: content does not match its name (corrupt; removed)", path.display())]
    BlobCorrupt { path: PathBuf },
    #[error("cache blob {}: {source}", path.display())]
    Blob { path: PathBuf, source: io::Error },
    #[error("cache table: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cache table: {0}")]
    Json(#[from] serde_json::Error),
}

/// A task's cache key and the hash of each of its parts (all lowercase hex
/// SHA-256), stored as JSON with the entry so a miss can be explained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The key: a hash over the part hashes below.
    pub key: String,
    pub argv: String,
    pub image: String,
    pub env: String,
    /// `(path as declared, content hash)`, sorted by path, each path once.
    pub inputs: Vec<(String, String)>,
}

/// Builds the cache key of a task. Relative input paths are taken from `cwd`.
///
/// Every part is hashed over a length-prefixed encoding (a domain tag, then
/// each string as its u64 length and bytes), so no two different argvs, envs
/// or images share an encoding. The env is reduced to one value per name (the
/// last, as a process would see it) and sorted by name. Inputs are sorted and
/// deduplicated by their declared path: declaring them in another order is
/// the same task. A file input hashes to the plain SHA-256 of its content
/// (what `sha256sum` prints); a directory hashes its sorted relative entry
/// list with each file's content hash. Symlinks are followed.
pub fn compute_key(
    argv: &[String],
    image: Option<&str>,
    env: &[(String, String)],
    cwd: &Path,
    inputs: &[String],
) -> Result<CacheKey, CacheError> {
    let mut h = Encoder::new(b"scalable-cache/argv/1");
    h.count(argv.len());
    for a in argv {
        h.bytes(a.as_bytes());
    }
    let argv_hash = h.finish();

    let mut h = Encoder::new(b"scalable-cache/image/1");
    match image {
        None => h.count(0),
        Some(i) => {
            h.count(1);
            h.bytes(i.as_bytes());
        }
    }
    let image_hash = h.finish();

    let env_map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut h = Encoder::new(b"scalable-cache/env/1");
    h.count(env_map.len());
    for (k, v) in &env_map {
        h.bytes(k.as_bytes());
        h.bytes(v.as_bytes());
    }
    let env_hash = h.finish();

    let declared: BTreeSet<&String> = inputs.iter().collect();
    let mut input_hashes = Vec::with_capacity(declared.len());
    for path in declared {
        input_hashes.push((path.clone(), hash_input(cwd, path)?));
    }

    let mut h = Encoder::new(b"scalable-cache/key/1");
    h.bytes(argv_hash.as_bytes());
    h.bytes(image_hash.as_bytes());
    h.bytes(env_hash.as_bytes());
    h.count(input_hashes.len());
    for (path, hash) in &input_hashes {
        h.bytes(path.as_bytes());
        h.bytes(hash.as_bytes());
    }
    Ok(CacheKey {
        key: h.finish(),
        argv: argv_hash,
        image: image_hash,
        env: env_hash,
        inputs: input_hashes,
    })
}

/// What differs between an earlier key and this one, as phrases for `why`:
/// "command (argv) changed", "image changed", "environment changed",
/// "input P changed", "input P added", "input P removed". Empty when equal.
pub fn explain_change(old: &CacheKey, new: &CacheKey) -> Vec<String> {
    let mut out = Vec::new();
    if old.argv != new.argv {
        out.push("command (argv) changed".to_string());
    }
    if old.image != new.image {
        out.push("image changed".to_string());
    }
    if old.env != new.env {
        out.push("environment changed".to_string());
    }
    let before: BTreeMap<&str, &str> = old
        .inputs
        .iter()
        .map(|(p, h)| (p.as_str(), h.as_str()))
        .collect();
    let after: BTreeMap<&str, &str> = new
        .inputs
        .iter()
        .map(|(p, h)| (p.as_str(), h.as_str()))
        .collect();
    let paths: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    for p in paths {
        match (before.get(p), after.get(p)) {
            (Some(a), Some(b)) if a != b => out.push(format!("input {p} changed")),
            (None, Some(_)) => out.push(format!("input {p} added")),
            (Some(_), None) => out.push(format!("input {p} removed")),
            _ => {}
        }
    }
    out
}

/// A SHA-256 over a length-prefixed encoding: no two different sequences of
/// strings feed it the same bytes.
struct Encoder(Context);

impl Encoder {
    fn new(domain: &[u8]) -> Encoder {
        let mut e = Encoder(Context::new(&SHA256));
        e.bytes(domain);
        e
    }
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.update(b);
    }
    fn finish(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The content hash of one declared input (file or directory).
fn hash_input(cwd: &Path, declared: &str) -> Result<String, CacheError> {
    let full = cwd.join(declared);
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            CacheError::InputMissing {
                path: declared.to_string(),
            }
        } else {
            CacheError::Input {
                path: declared.to_string(),
                source,
            }
        }
    };
    let meta = fs::metadata(&full).map_err(io_err)?;
    if meta.is_file() {
        return hash_file(&full).map_err(io_err);
    }
    if !meta.is_dir() {
        // A fifo or a device would block or never end.
        return Err(CacheError::InputNotRegular {
            path: declared.to_string(),
        });
    }
    let mut h = Encoder::new(b"scalable-cache/dir/1");
    let mut entries = 0usize;
    hash_dir(&full, Path::new(""), 0, &mut h, &mut entries, declared)?;
    Ok(h.finish())
}

/// Feeds a directory's entries, sorted by name, into `h`: `d` + relative path
/// for a directory (so empty ones count), `f` + relative path + content hash
/// for anything else.
fn hash_dir(
    dir: &Path,
    rel: &Path,
    depth: usize,
    h: &mut Encoder,
    entries: &mut usize,
    declared: &str,
) -> Result<(), CacheError> {
    let io_err = |source: io::Error| CacheError::Input {
        path: declared.to_string(),
        source,
    };
    if depth >= INPUT_DIR_DEPTH_MAX {
        return Err(CacheError::InputTooDeep {
            path: declared.to_string(),
        });
    }
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err)? {
        names.push(e.map_err(io_err)?.file_name());
    }
    names.sort();
    for name in names {
        *entries += 1;
        if *entries > INPUT_DIR_ENTRIES_MAX {
            return Err(CacheError::InputTooLarge {
                path: declared.to_string(),
            });
        }
        let full = dir.join(&name);
        let rel = rel.join(&name);
        let rel_bytes = rel.as_os_str().as_bytes();
        let meta = fs::metadata(&full).map_err(io_err)?;
        if meta.is_dir() {
            h.bytes(b"d");
            h.bytes(rel_bytes);
            hash_dir(&full, &rel, depth + 1, h, entries, declared)?;
        } else if !meta.is_file() {
            return Err(CacheError::InputNotRegular {
                path: Path::new(declared).join(&rel).display().to_string(),
            });
        } else {
            h.bytes(b"f");
            h.bytes(rel_bytes);
            h.bytes(hash_file(&full).map_err(io_err)?.as_bytes());
        }
    }
    Ok(())
}

/// The plain SHA-256 of a file's content, read in chunks.
fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

mod blobs;
mod probe;
mod table;
#[cfg(test)]
mod tests;

pub use blobs::{Blobs, SavedOutput};
pub use probe::{probe, record_success, ProbeAnswer, ProbeRequest};
pub use table::{insert, latest_for, lookup, Entry, SCHEMA};
