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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{Context, SHA256};
use rusqlite::OptionalExtension;
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
/// is not kept).
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// The broker passes `<state_dir>/cache`; it is created on first save.
    pub fn new(root: impl Into<PathBuf>) -> Blobs {
        Blobs { root: root.into() }
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
            let full = cwd.join(declared);
            if fs::metadata(&full).map_err(out_err)?.is_dir() {
                return Err(CacheError::OutputIsDirectory {
                    path: declared.clone(),
                });
            }
            let mut src = File::open(&full).map_err(out_err)?;
            fs::create_dir_all(&self.root).map_err(|source| CacheError::Blob {
                path: self.root.clone(),
                source,
            })?;
            let (tmp_path, mut tmp) =
                create_temp(&self.root).map_err(|source| CacheError::Blob {
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
                    fs::create_dir_all(dir).map_err(blob_err)?;
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
            let target = cwd.join(&out.path);
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
            let (tmp_path, mut tmp) = create_temp(&dir).map_err(out_err)?;
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
/// savers (threads or broker processes) never share one.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".scalable-tmp-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
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

/// The `cache_entries` table; the store runs it with its own schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    parts TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_entries_by_task
    ON cache_entries (workflow, job, idx, created_at_ms);
";

/// One row of `cache_entries`: which task produced a key and what it saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub workflow: String,
    pub job: String,
    pub idx: u64,
    pub task_id: u64,
    pub attempt_id: u64,
    /// Stored as JSON in `parts`.
    pub parts: CacheKey,
    /// Stored as JSON in `outputs`.
    pub outputs: Vec<SavedOutput>,
    pub created_at_ms: u64,
}

const ENTRY_COLUMNS: &str =
    "key, workflow, job, idx, task_id, attempt_id, parts, outputs, created_at_ms";

/// The entry with this key, if any.
pub fn lookup(conn: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Entry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE key = ?1");
    conn.prepare_cached(&sql)?
        .query_row([key], entry_from_row)
        .optional()
}

/// The most recent entry of the same task path (`workflow/job/idx`), to
/// explain a miss.
pub fn latest_for(
    conn: &rusqlite::Connection,
    workflow: &str,
    job: &str,
    idx: u64,
) -> rusqlite::Result<Option<Entry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE workflow = ?1 AND job = ?2 AND idx = ?3 \
         ORDER BY created_at_ms DESC, rowid DESC LIMIT 1"
    );
    conn.prepare_cached(&sql)?
        .query_row(
            rusqlite::params![workflow, job, sql_int(idx)?],
            entry_from_row,
        )
        .optional()
}

/// Inserts an entry, replacing any earlier one with the same key (the latest
/// successful run of a key is the one restored).
pub fn insert(conn: &rusqlite::Connection, e: &Entry) -> rusqlite::Result<()> {
    let json = |v: serde_json::Result<String>| {
        v.map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))
    };
    let parts = json(serde_json::to_string(&e.parts))?;
    let outputs = json(serde_json::to_string(&e.outputs))?;
    let sql = format!(
        "INSERT OR REPLACE INTO cache_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    );
    conn.prepare_cached(&sql)?.execute(rusqlite::params![
        e.key,
        e.workflow,
        e.job,
        sql_int(e.idx)?,
        sql_int(e.task_id)?,
        sql_int(e.attempt_id)?,
        parts,
        outputs,
        sql_int(e.created_at_ms)?,
    ])?;
    Ok(())
}

/// SQLite integers are i64; ids and times above `i64::MAX` are refused, not
/// wrapped.
fn sql_int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))
}

fn uint(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = r.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    fn json<T: serde::de::DeserializeOwned>(
        r: &rusqlite::Row<'_>,
        i: usize,
    ) -> rusqlite::Result<T> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(err))
        })
    }
    Ok(Entry {
        key: r.get(0)?,
        workflow: r.get(1)?,
        job: r.get(2)?,
        idx: uint(r, 3)?,
        task_id: uint(r, 4)?,
        attempt_id: uint(r, 5)?,
        parts: json(r, 6)?,
        outputs: json(r, 7)?,
        created_at_ms: uint(r, 8)?,
    })
}

/// What the broker asks before running a task with `cache: true`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub workflow: String,
    pub job: String,
    pub idx: u64,
    pub argv: Vec<String>,
    pub image: Option<String>,
    pub env: Vec<(String, String)>,
    /// The task's working directory; relative inputs and outputs are in it.
    pub cwd: PathBuf,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// The answer to a [`ProbeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Mark the task `cached`: its outputs are in place (`restored` files were
    /// written, the rest already matched), copied from `from_task`'s run.
    Hit {
        key: CacheKey,
        from_task: u64,
        restored: u32,
    },
    /// Run the task; on success, [`record_success`] with this key. `why` is
    /// for `why TASK`: "no earlier run of this task" or "cache miss: …".
    Miss { key: CacheKey, why: String },
    /// No key could be computed (a missing input) or the table could not be
    /// read: run the task and record nothing. The run itself reports a missing
    /// input (INVALID_INPUT).
    Unavailable { why: String },
}

/// Computes the task's key and, on a hit whose outputs are all still in the
/// blob store, restores them. Blocking: it hashes every input.
pub fn probe(conn: &rusqlite::Connection, blobs: &Blobs, req: &ProbeRequest) -> ProbeAnswer {
    let key = match compute_key(
        &req.argv,
        req.image.as_deref(),
        &req.env,
        &req.cwd,
        &req.inputs,
    ) {
        Ok(k) => k,
        Err(e) => {
            return ProbeAnswer::Unavailable {
                why: format!("cache unavailable: {e}"),
            }
        }
    };
    let entry = match lookup(conn, &key.key) {
        Ok(e) => e,
        Err(e) => {
            return ProbeAnswer::Unavailable {
                why: format!("cache unavailable: {}", CacheError::Sql(e)),
            }
        }
    };
    let Some(entry) = entry else {
        let why = match latest_for(conn, &req.workflow, &req.job, req.idx) {
            Ok(None) => "no earlier run of this task".to_string(),
            Ok(Some(prev)) => {
                let changes = explain_change(&prev.parts, &key);
                if changes.is_empty() {
                    "cache miss: no entry for this key".to_string()
                } else {
                    format!("cache miss: {}", changes.join(", "))
                }
            }
            Err(e) => format!("cache miss: the earlier run is unreadable ({e})"),
        };
        return ProbeAnswer::Miss { key, why };
    };
    // The key does not cover which outputs are declared: an output declared
    // since the cached run was saved cannot be restored.
    if let Some(p) = req
        .outputs
        .iter()
        .find(|p| !entry.outputs.iter().any(|o| &o.path == *p))
    {
        let why = format!("cache miss: output {p} was not saved by the cached run");
        return ProbeAnswer::Miss { key, why };
    }
    if let Some(o) = entry.outputs.iter().find(|o| !blobs.contains(&o.sha256)) {
        let why = format!(
            "cache miss: the saved copy of output {} is gone from the cache directory",
            o.path
        );
        return ProbeAnswer::Miss { key, why };
    }
    match blobs.restore_outputs(&req.cwd, &entry.outputs) {
        Ok(restored) => ProbeAnswer::Hit {
            key,
            from_task: entry.task_id,
            restored,
        },
        Err(e) => ProbeAnswer::Miss {
            key,
            why: format!("cache miss: the cached outputs could not be restored ({e})"),
        },
    }
}

/// After a task with `cache: true` succeeded: saves its declared outputs to
/// the blob store and records the entry under `key` (the one [`probe`]
/// returned). An error (an output that is a directory, a full disk) means
/// only that this run is not cached.
// The arguments are the entry's columns, as the caller holds them; a struct
// would only restate `Entry`.
#[allow(clippy::too_many_arguments)]
pub fn record_success(
    conn: &rusqlite::Connection,
    blobs: &Blobs,
    workflow: &str,
    job: &str,
    idx: u64,
    task_id: u64,
    attempt_id: u64,
    key: &CacheKey,
    cwd: &Path,
    outputs: &[String],
    now_ms: u64,
) -> Result<(), CacheError> {
    let saved = blobs.save_outputs(cwd, outputs)?;
    insert(
        conn,
        &Entry {
            key: key.key.clone(),
            workflow: workflow.to_string(),
            job: job.to_string(),
            idx,
            task_id,
            attempt_id,
            parts: key.clone(),
            outputs: saved,
            created_at_ms: now_ms,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key(dir: &Path, argv: &[&str], inputs: &[&str]) -> CacheKey {
        compute_key(&s(argv), Some("img"), &[], dir, &s(inputs)).unwrap()
    }

    #[test]
    fn same_inputs_give_the_same_key() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.csv"), "1,2\n").unwrap();
        let k1 = key(d.path(), &["sim", "a.csv"], &["a.csv"]);
        let k2 = key(d.path(), &["sim", "a.csv"], &["a.csv"]);
        assert_eq!(k1, k2);
        assert_eq!(k1.key.len(), 64);
        // A file input is the plain SHA-256 of its content (sha256sum of "1,2\n").
        assert_eq!(
            k1.inputs,
            vec![(
                "a.csv".to_string(),
                "52186c933993da4082b3cdc7c40bb4bf735b391ff54a2ef78c037dda6c38a680".to_string()
            )]
        );
        assert!(explain_change(&k1, &k2).is_empty());
    }

    #[test]
    fn argv_order_changes_the_key() {
        let d = tempfile::tempdir().unwrap();
        let k1 = key(d.path(), &["a", "b"], &[]);
        let k2 = key(d.path(), &["b", "a"], &[]);
        assert_ne!(k1.key, k2.key);
        assert_eq!(explain_change(&k1, &k2), vec!["command (argv) changed"]);
        // Length prefixes: ["ab"] and ["a", "b"] differ.
        assert_ne!(
            key(d.path(), &["ab"], &[]).key,
            key(d.path(), &["a", "b"], &[]).key
        );
    }

    #[test]
    fn env_order_does_not_change_the_key() {
        let d = tempfile::tempdir().unwrap();
        let argv = s(&["x"]);
        let e1 = env(&[("A", "1"), ("B", "2")]);
        let e2 = env(&[("B", "2"), ("A", "1")]);
        let k1 = compute_key(&argv, None, &e1, d.path(), &[]).unwrap();
        let k2 = compute_key(&argv, None, &e2, d.path(), &[]).unwrap();
        assert_eq!(k1, k2);
        let e3 = env(&[("A", "1"), ("B", "3")]);
        let k3 = compute_key(&argv, None, &e3, d.path(), &[]).unwrap();
        assert_eq!(explain_change(&k1, &k3), vec!["environment changed"]);
        // The last value of a repeated name wins, as in a process environment.
        let e4 = env(&[("B", "9"), ("A", "1"), ("B", "2")]);
        assert_eq!(compute_key(&argv, None, &e4, d.path(), &[]).unwrap(), k1);
        let with_image = compute_key(&argv, Some("busybox"), &e1, d.path(), &[]).unwrap();
        assert_eq!(explain_change(&k1, &with_image), vec!["image changed"]);
    }

    #[test]
    fn one_changed_input_byte_changes_only_that_input() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("data")).unwrap();
        fs::write(d.path().join("data/3.csv"), "abc").unwrap();
        fs::write(d.path().join("data/4.csv"), "def").unwrap();
        let inputs = ["data/4.csv", "data/3.csv"];
        let k1 = key(d.path(), &["agg"], &inputs);
        fs::write(d.path().join("data/3.csv"), "abd").unwrap();
        let k2 = key(d.path(), &["agg"], &inputs);
        assert_ne!(k1.key, k2.key);
        assert_eq!(
            (&k1.argv, &k1.image, &k1.env),
            (&k2.argv, &k2.image, &k2.env)
        );
        assert_eq!(k1.inputs[0].0, "data/3.csv");
        assert_ne!(k1.inputs[0].1, k2.inputs[0].1);
        assert_eq!(k1.inputs[1], k2.inputs[1]);
        assert_eq!(explain_change(&k1, &k2), vec!["input data/3.csv changed"]);
        // Declared order does not matter; added and removed inputs are named.
        let k3 = key(d.path(), &["agg"], &["data/3.csv"]);
        assert_eq!(explain_change(&k2, &k3), vec!["input data/4.csv removed"]);
        assert_eq!(explain_change(&k3, &k2), vec!["input data/4.csv added"]);
        assert_eq!(key(d.path(), &["agg"], &["data/3.csv", "data/4.csv"]), k2);
    }

    #[test]
    fn a_missing_input_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let e = compute_key(&s(&["x"]), None, &[], d.path(), &s(&["nope.csv"])).unwrap_err();
        assert_eq!(e.to_string(), "input nope.csv: does not exist");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = compute_key(&s(&["x"]), None, &[], d.path(), &s(&["fifo"])).unwrap_err();
        assert_eq!(e.to_string(), "input fifo: not a regular file or directory");
    }

    #[test]
    fn a_directory_input_hashes_its_files_and_names() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("in");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a"), "1").unwrap();
        fs::write(dir.join("b"), "2").unwrap();
        let k1 = key(d.path(), &["x"], &["in"]);
        assert_eq!(key(d.path(), &["x"], &["in"]), k1);
        fs::write(dir.join("sub/a"), "3").unwrap();
        let k2 = key(d.path(), &["x"], &["in"]);
        assert_eq!(explain_change(&k1, &k2), vec!["input in changed"]);
        fs::rename(dir.join("b"), dir.join("c")).unwrap();
        assert_ne!(key(d.path(), &["x"], &["in"]), k2);
        // An absolute path is not joined onto the cwd.
        let abs = dir.to_str().unwrap().to_string();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            compute_key(
                &s(&["x"]),
                None,
                &[],
                other.path(),
                std::slice::from_ref(&abs)
            )
            .unwrap()
            .inputs[0]
                .1,
            compute_key(&s(&["x"]), None, &[], d.path(), &s(&["in"]))
                .unwrap()
                .inputs[0]
                .1
        );
    }

    #[test]
    fn save_delete_restore_gives_the_bytes_back() {
        let d = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(d.path().join("state/cache"));
        let cwd = d.path().join("work");
        fs::create_dir_all(cwd.join("out")).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(cwd.join("out/r.bin"), &data).unwrap();
        fs::write(cwd.join("s.txt"), "same").unwrap();
        let saved = blobs
            .save_outputs(&cwd, &s(&["out/r.bin", "s.txt"]))
            .unwrap();
        assert_eq!(saved[0].bytes, 200_000);
        assert_eq!(saved[0].sha256, hash_file(&cwd.join("out/r.bin")).unwrap());
        assert!(blobs.contains(&saved[0].sha256));
        let name = &saved[0].sha256;
        assert_eq!(
            blobs.blob_path(name),
            d.path()
                .join("state/cache")
                .join(&name[..2])
                .join(&name[2..])
        );
        // Saving again keeps the one blob and leaves no temporary file behind.
        assert_eq!(
            blobs
                .save_outputs(&cwd, &s(&["out/r.bin", "s.txt"]))
                .unwrap(),
            saved
        );
        let leftovers: Vec<_> = fs::read_dir(blobs.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".scalable-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        fs::remove_dir_all(cwd.join("out")).unwrap();
        fs::write(cwd.join("s.txt"), "changed").unwrap();
        assert_eq!(blobs.restore_outputs(&cwd, &saved).unwrap(), 2);
        assert_eq!(fs::read(cwd.join("out/r.bin")).unwrap(), data);
        assert_eq!(fs::read(cwd.join("s.txt")).unwrap(), b"same");
        let in_out: Vec<_> = fs::read_dir(cwd.join("out")).unwrap().collect();
        assert_eq!(in_out.len(), 1, "only the restored file, no temporary");
    }

    #[test]
    fn restore_does_not_rewrite_a_matching_file() {
        let d = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(d.path().join("cache"));
        let f = d.path().join("o.txt");
        fs::write(&f, "result").unwrap();
        let saved = blobs.save_outputs(d.path(), &s(&["o.txt"])).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f).unwrap());
        assert_eq!(blobs.restore_outputs(d.path(), &saved).unwrap(), 0);
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.modified().unwrap(), old);
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&m), ino);
    }

    #[test]
    fn outputs_must_be_files_and_blobs_must_be_intact() {
        let d = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(d.path().join("cache"));
        fs::create_dir(d.path().join("dir")).unwrap();
        let e = blobs.save_outputs(d.path(), &s(&["dir"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output dir is a directory; cache supports files"
        );
        let e = blobs.save_outputs(d.path(), &s(&["gone"])).unwrap_err();
        assert_eq!(e.to_string(), "output gone: does not exist");

        fs::write(d.path().join("o"), "good").unwrap();
        let saved = blobs.save_outputs(d.path(), &s(&["o"])).unwrap();
        let blob = blobs.blob_path(&saved[0].sha256);
        fs::write(&blob, "evil").unwrap();
        fs::remove_file(d.path().join("o")).unwrap();
        let e = blobs.restore_outputs(d.path(), &saved).unwrap_err();
        assert!(matches!(e, CacheError::BlobCorrupt { .. }), "{e}");
        assert!(!blob.exists(), "a corrupt blob is removed");
        assert!(!d.path().join("o").exists(), "nothing corrupt is restored");
        let e = blobs.restore_outputs(d.path(), &saved).unwrap_err();
        assert!(matches!(e, CacheError::BlobMissing { .. }), "{e}");
        let bad = SavedOutput {
            path: "o".into(),
            sha256: "../../o".into(),
            bytes: 4,
        };
        assert!(!blobs.contains(&bad.sha256));
        let e = blobs.restore_outputs(d.path(), &[bad]).unwrap_err();
        assert!(matches!(e, CacheError::BlobMissing { .. }), "{e}");
    }

    fn memory_db() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(SCHEMA).unwrap(); // idempotent, as the store reopens
        conn
    }

    fn entry(k: &CacheKey, idx: u64, task_id: u64, at_ms: u64) -> Entry {
        Entry {
            key: k.key.clone(),
            workflow: "wf".into(),
            job: "sim".into(),
            idx,
            task_id,
            attempt_id: task_id * 10,
            parts: k.clone(),
            outputs: vec![SavedOutput {
                path: "out.txt".into(),
                sha256: "ab".repeat(32),
                bytes: 3,
            }],
            created_at_ms: at_ms,
        }
    }

    #[test]
    fn entries_round_trip_through_the_table() {
        let d = tempfile::tempdir().unwrap();
        let conn = memory_db();
        let k1 = key(d.path(), &["sim", "1"], &[]);
        let k2 = key(d.path(), &["sim", "2"], &[]);
        let k3 = key(d.path(), &["sim", "3"], &[]);
        assert_eq!(lookup(&conn, &k1.key).unwrap(), None);
        assert_eq!(latest_for(&conn, "wf", "sim", 0).unwrap(), None);
        let e1 = entry(&k1, 0, 1, 1_000);
        insert(&conn, &e1).unwrap();
        assert_eq!(lookup(&conn, &k1.key).unwrap(), Some(e1.clone()));
        insert(&conn, &entry(&k2, 0, 2, 2_000)).unwrap();
        insert(&conn, &entry(&k3, 1, 3, 3_000)).unwrap();
        let latest = latest_for(&conn, "wf", "sim", 0).unwrap().unwrap();
        assert_eq!((latest.task_id, latest.parts), (2, k2.clone()));
        assert_eq!(
            latest_for(&conn, "wf", "sim", 1).unwrap().unwrap().task_id,
            3
        );
        assert_eq!(latest_for(&conn, "wf", "other", 0).unwrap(), None);
        // The same key again replaces the row (and becomes the latest).
        let again = entry(&k1, 0, 4, 4_000);
        insert(&conn, &again).unwrap();
        assert_eq!(lookup(&conn, &k1.key).unwrap(), Some(again.clone()));
        assert_eq!(latest_for(&conn, "wf", "sim", 0).unwrap(), Some(again));
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM cache_entries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
    }

    fn request(cwd: &Path, n: &str) -> ProbeRequest {
        ProbeRequest {
            workflow: "wf".into(),
            job: "sim".into(),
            idx: 3,
            argv: s(&["sim", n]),
            image: None,
            env: env(&[("SEED", "1")]),
            cwd: cwd.to_path_buf(),
            inputs: s(&["in.csv"]),
            outputs: s(&["out/r.txt"]),
        }
    }

    /// Runs the "task" (writes its output) and records it, as the broker does
    /// after a success.
    fn run_and_record(
        conn: &rusqlite::Connection,
        blobs: &Blobs,
        req: &ProbeRequest,
        task_id: u64,
    ) {
        let ProbeAnswer::Miss { key, .. } = probe(conn, blobs, req) else {
            panic!("expected a miss");
        };
        fs::create_dir_all(req.cwd.join("out")).unwrap();
        fs::write(req.cwd.join("out/r.txt"), format!("result {}", req.argv[1])).unwrap();
        record_success(
            conn,
            blobs,
            &req.workflow,
            &req.job,
            req.idx,
            task_id,
            task_id * 10,
            &key,
            &req.cwd,
            &req.outputs,
            task_id * 1_000,
        )
        .unwrap();
    }

    #[test]
    fn probe_misses_then_hits_and_restores() {
        let d = tempfile::tempdir().unwrap();
        let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
        let cwd = d.path().join("w");
        fs::create_dir(&cwd).unwrap();
        fs::write(cwd.join("in.csv"), "a,b").unwrap();
        let req = request(&cwd, "1");
        match probe(&conn, &blobs, &req) {
            ProbeAnswer::Miss { why, .. } => assert_eq!(why, "no earlier run of this task"),
            other => panic!("{other:?}"),
        }
        run_and_record(&conn, &blobs, &req, 7);

        // Outputs already in place: a hit that writes nothing.
        match probe(&conn, &blobs, &req) {
            ProbeAnswer::Hit {
                from_task,
                restored,
                ..
            } => assert_eq!((from_task, restored), (7, 0)),
            other => panic!("{other:?}"),
        }
        // Outputs gone (a fresh run dir): a hit that restores them.
        fs::remove_dir_all(cwd.join("out")).unwrap();
        match probe(&conn, &blobs, &req) {
            ProbeAnswer::Hit {
                key,
                from_task,
                restored,
            } => {
                assert_eq!((from_task, restored), (7, 1));
                assert_eq!(lookup(&conn, &key.key).unwrap().unwrap().task_id, 7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            fs::read_to_string(cwd.join("out/r.txt")).unwrap(),
            "result 1"
        );
    }

    #[test]
    fn probe_explains_a_miss_by_the_parts_that_changed() {
        let d = tempfile::tempdir().unwrap();
        let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
        fs::write(d.path().join("in.csv"), "a,b").unwrap();
        run_and_record(&conn, &blobs, &request(d.path(), "1"), 1);
        fs::write(d.path().join("in.csv"), "a,c").unwrap();
        let mut req = request(d.path(), "2");
        req.image = Some("busybox".into());
        match probe(&conn, &blobs, &req) {
            ProbeAnswer::Miss { why, .. } => assert_eq!(
                why,
                "cache miss: command (argv) changed, image changed, input in.csv changed"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn probe_is_unavailable_without_an_input_and_misses_without_blobs() {
        let d = tempfile::tempdir().unwrap();
        let (conn, blobs) = (memory_db(), Blobs::new(d.path().join("cache")));
        let req = request(d.path(), "1");
        assert_eq!(
            probe(&conn, &blobs, &req),
            ProbeAnswer::Unavailable {
                why: "cache unavailable: input in.csv: does not exist".into()
            }
        );
        fs::write(d.path().join("in.csv"), "a,b").unwrap();
        run_and_record(&conn, &blobs, &req, 1);
        // A newly declared output was never saved: run again.
        let mut more = req.clone();
        more.outputs.push("extra.txt".into());
        match probe(&conn, &blobs, &more) {
            ProbeAnswer::Miss { why, .. } => assert_eq!(
                why,
                "cache miss: output extra.txt was not saved by the cached run"
            ),
            other => panic!("{other:?}"),
        }
        // The cache directory was cleaned: a miss, nothing touched.
        fs::remove_dir_all(blobs.root()).unwrap();
        fs::remove_file(d.path().join("out/r.txt")).unwrap();
        match probe(&conn, &blobs, &req) {
            ProbeAnswer::Miss { why, .. } => assert_eq!(
                why,
                "cache miss: the saved copy of output out/r.txt is gone from the cache directory"
            ),
            other => panic!("{other:?}"),
        }
        assert!(!d.path().join("out/r.txt").exists());
        // A directory output cannot be recorded; the error names it.
        let ProbeAnswer::Miss { key, .. } = probe(&conn, &blobs, &req) else {
            panic!("expected a miss");
        };
        let e = record_success(
            &conn,
            &blobs,
            "wf",
            "sim",
            3,
            2,
            20,
            &key,
            d.path(),
            &s(&["out"]),
            5,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "output out is a directory; cache supports files"
        );
    }
}
