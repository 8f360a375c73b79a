//! The S3 transport of staging (`storage: s3://bucket/prefix` on a target,
//! issue 20, SPEC §4 "Data"): content-addressed blobs at
//! `<prefix>/blobs/<sha256>`, moved by the real `aws` CLI run as a child
//! process (no cloud SDK in the build). The endpoint, region and credentials
//! come from the standard environment (`AWS_ENDPOINT_URL`, `AWS_PROFILE`,
//! `AWS_ACCESS_KEY_ID`...), which the child inherits.
//!
//! Owns: the key of a blob, one `aws` call per operation, the one-line error
//! naming the object and the CLI's last line, and the rules that make a blob
//! trustworthy: an upload is a single S3 PUT (`aws s3 cp`: whole object or
//! none, a multipart upload becomes visible only when complete), a blob
//! already present with its size is not uploaded again, and a download is
//! written beside its place and renamed only when its SHA-256 matches (a blob
//! that does not match its name is deleted so the next upload replaces it).
//! Blocking: callers run it on blocking threads. It must not decide what to
//! stage nor log anything secret (the CLI's error line is scrubbed of the
//! secret key and session token).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::manifest::check_storage;
use crate::staging::hash_file;

/// Bytes of the CLI's error line kept in a message, at most.
const ERROR_LINE_MAX: usize = 300;
/// Suffix of a download in progress, beside its final name.
const PARTIAL_SUFFIX: &str = ".scalable-s3-partial";

/// A failed S3 transfer, said in one line: the object and the CLI's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error(pub String);

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a process that must be waited for to its end is run: `Command::output`
/// by default; the agent's goes through its reaper (which waits for any child).
pub type Runner = fn(&mut Command) -> io::Result<Output>;

/// One `storage:` URL: where the blobs are.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    url: String,
    bucket: String,
    prefix: String,
    runner: Runner,
}

impl ObjectStore {
    /// A checked `s3://bucket[/prefix]` URL, or why not (one line with a hint).
    pub fn parse(url: &str) -> Result<ObjectStore, String> {
        check_storage(url).map_err(|(why, hint)| format!("{why} (hint: {hint})"))?;
        let rest = &url["s3://".len()..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(ObjectStore {
            url: url.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            runner: Command::output,
        })
    }

    /// The same store, its `aws` processes run by `runner`.
    pub fn with_runner(mut self, runner: Runner) -> ObjectStore {
        self.runner = runner;
        self
    }

    /// The URL as the manifest wrote it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of blob `sha256`.
    pub fn key(&self, sha256: &str) -> String {
        if self.prefix.is_empty() {
            format!("blobs/{sha256}")
        } else {
            format!("{}/blobs/{sha256}", self.prefix)
        }
    }

    /// `s3://bucket/key` of blob `sha256`.
    pub fn uri(&self, sha256: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(sha256))
    }

    /// The size of blob `sha256` in the store, `None` when it is not there.
    pub fn size_of(&self, sha256: &str) -> Result<Option<u64>, S3Error> {
        let key = self.key(sha256);
        let out = self.aws(
            sha256,
            &[
                "s3api",
                "head-object",
                "--bucket",
                &self.bucket,
                "--key",
                &key,
                "--query",
                "ContentLength",
                "--output",
                "text",
            ],
        )?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.error(sha256, &format!("head-object said {:?}", text.trim())));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("404") || err.contains("Not Found") || err.contains("NoSuchKey") {
            return Ok(None);
        }
        Err(self.failed(sha256, &out))
    }

    /// Uploads `path` (of content `sha256`, `size` bytes) unless the store
    /// has that blob already; returns whether bytes were sent.
    pub fn put(&self, path: &Path, sha256: &str, size: u64) -> Result<bool, S3Error> {
        if self.size_of(sha256)? == Some(size) {
            return Ok(false);
        }
        tracing::info!("uploading {} to {}", path.display(), self.uri(sha256));
        let src = path.to_string_lossy();
        let uri = self.uri(sha256);
        let out = self.aws(
            sha256,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                "--no-progress",
                &src,
                &uri,
            ],
        )?;
        if !out.status.success() {
            return Err(self.failed(sha256, &out));
        }
        Ok(true)
    }

    /// Downloads blob `sha256` to `dest`: into a file beside it, checked
    /// against the hash and size, then renamed. A stored blob that does not
    /// match its name is deleted (the next upload replaces it).
    pub fn get(&self, sha256: &str, size: u64, dest: &Path) -> Result<(), S3Error> {
        let partial = partial_path(dest);
        let uri = self.uri(sha256);
        let target = partial.to_string_lossy();
        let out = self.aws(
            sha256,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                "--no-progress",
                &uri,
                &target,
            ],
        )?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&partial);
            return Err(self.failed(sha256, &out));
        }
        let local = |e: io::Error| self.error(sha256, &format!("{}: {e}", partial.display()));
        let (got, n) = hash_file(&partial).map_err(local)?;
        if got != sha256 || n != size {
            let _ = std::fs::remove_file(&partial);
            let _ = self.delete(sha256);
            return Err(self.error(
                sha256,
                &format!(
                    "the object's bytes ({n} B) do not match its SHA-256 and size ({size} B); deleted it"
                ),
            ));
        }
        std::fs::rename(&partial, dest).map_err(|e| self.error(sha256, &e.to_string()))
    }

    /// Deletes blob `sha256` from the store.
    pub fn delete(&self, sha256: &str) -> Result<(), S3Error> {
        let key = self.key(sha256);
        let out = self.aws(
            sha256,
            &[
                "s3api",
                "delete-object",
                "--bucket",
                &self.bucket,
                "--key",
                &key,
            ],
        )?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed(sha256, &out))
        }
    }

    /// Runs `aws ARGS` to its end (stdin closed, output captured). A missing
    /// CLI is said once, with the hint to install it.
    fn aws(&self, sha256: &str, args: &[&str]) -> Result<Output, S3Error> {
        let mut cmd = Command::new("aws");
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        (self.runner)(&mut cmd).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                S3Error(format!(
                    "storage: {} needs the aws CLI, which is not on this machine's PATH (hint: install it, e.g. pip install awscli)",
                    self.url
                ))
            } else {
                self.error(sha256, &format!("cannot run aws: {e}"))
            }
        })
    }

    fn failed(&self, sha256: &str, out: &Output) -> S3Error {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("aws exited with {}", out.status));
        self.error(sha256, &line)
    }

    fn error(&self, sha256: &str, line: &str) -> S3Error {
        S3Error(format!(
            "S3 transfer of {} failed: {}",
            self.uri(sha256),
            scrub(line)
        ))
    }
}

/// Transfers run at once by [`each_at_once`] (each one `aws` process, a
/// Python interpreter: more would crowd a small machine).
pub const TRANSFERS_AT_ONCE: usize = 4;

/// Runs `op` over `items` on [`TRANSFERS_AT_ONCE`] threads; the first error
/// (the rest are not started once one failed).
pub fn each_at_once<T, F>(items: &[T], op: F) -> Result<(), String>
where
    T: Sync,
    F: Fn(&T) -> Result<(), String> + Sync,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..TRANSFERS_AT_ONCE.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                if let Err(e) = op(item) {
                    first_error.lock().expect("error").get_or_insert(e);
                    next.store(items.len(), Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    match first_error.into_inner().expect("error") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Where a download of `dest` is written until it is verified.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PARTIAL_SUFFIX);
    dest.with_file_name(name)
}

/// One line, bounded, without the secret key or session token in it.
fn scrub(line: &str) -> String {
    let mut s: String = line.chars().filter(|c| !c.is_control()).collect();
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(secret) = std::env::var(var) {
            if secret.len() >= 4 {
                s = s.replace(&secret, "***");
            }
        }
    }
    if s.len() > ERROR_LINE_MAX {
        let mut cut = ERROR_LINE_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The `aws` child dies with the thread that started it (Linux), so a
/// killed agent or broker never leaves an upload running unseen.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_keys_under_blobs() {
        let s = ObjectStore::parse("s3://my-bucket/runs/a/").unwrap();
        assert_eq!(s.key("ab"), "runs/a/blobs/ab");
        assert_eq!(s.uri("ab"), "s3://my-bucket/runs/a/blobs/ab");
        let bare = ObjectStore::parse("s3://my-bucket").unwrap();
        assert_eq!(bare.key("ab"), "blobs/ab");
        let bad = ObjectStore::parse("gs://x/y").unwrap_err();
        assert!(
            bad.contains("not an s3:// URL") && bad.contains("hint"),
            "{bad}"
        );
    }

    #[test]
    fn error_lines_are_one_bounded_line() {
        let s = scrub(&format!("a\tb{}", "x".repeat(1000)));
        assert!(!s.contains('\t'));
        assert!(s.len() <= ERROR_LINE_MAX + '…'.len_utf8());
    }
}
