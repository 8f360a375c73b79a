//! A task's stdout and stderr files: opening them, the size cap, the tail that
//! goes into a result, and reusing emptied files.
//!
//! Owns: the `Stream` type and the executor's spare files. It must not decide
//! when the cap is checked (the watchdog does) nor when a task ends (the
//! reaper does); it only does the file work they ask for.
//!
//! # Output files
//!
//! Each stream is an `O_TMPFILE` in `log_dir` (no name, nothing to unlink; falls
//! back to create + unlink where unsupported) opened `O_RDWR | O_APPEND`: the child
//! always appends, so when a file grows past `output_bytes_max` the watchdog can
//! truncate it to 0 and the child carries on at the new end. Dropped bytes are
//! still counted in `stdout_bytes`/`stderr_bytes`, and the tail then starts with
//! `[scalable: earlier output dropped]`.
//!
//! Creating and freeing an ext4 inode per stream cost about a tenth of the CPU a
//! `/bin/true` task takes, so emptied files are reused (at most `SPARE_FILES_MAX`
//! spares). To make that safe the child gets its *own* open file description
//! (reopened through `/proc/self/fd`), and a file is reused only if the kernel
//! grants us a write lease on it, which it does only when no other description
//! exists: a process that escaped the task's group and still holds its stdout
//! makes the file unusable, never another task's output.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::PoisonError;

use scalable_common::protocol::AttemptEnd;

use super::Inner;

/// Emptied output files an executor keeps for reuse.
const SPARE_FILES_MAX: usize = 64;
/// Starts a tail whose beginning was truncated away by the size cap.
const DROPPED_NOTE: &[u8] = b"[scalable: earlier output dropped]\n";

pub(super) struct Stream {
    /// Our own open file description (O_RDWR | O_APPEND); the child got another.
    file: File,
    /// Bytes truncated away because the file exceeded `output_bytes_max`.
    dropped_bytes: u64,
    /// The child's description is separate from ours, so the file can be checked
    /// for stragglers and reused (see `Inner::recycle`).
    reusable: bool,
}

impl Inner {
    /// An empty output file: a spare one if there is, else a new one.
    fn output_file(&self) -> io::Result<File> {
        let spare = self
            .spare_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match spare {
            Some(f) => Ok(f),
            None => open_output(&self.cfg.log_dir),
        }
    }

    /// Step "open the output files": the task's stdout and stderr, spare ones
    /// if there are, each with the child's own open file description (see
    /// `child_handle`). Returns ours and the child's, as (stdout, child's stdout,
    /// stderr, child's stderr). Must not write to them; a failure fails the
    /// attempt as `SpawnFailed`.
    pub(super) fn open_output_files(&self) -> Result<(Stream, File, Stream, File), AttemptEnd> {
        let (stdout, stderr) = match (self.output_file(), self.output_file()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(AttemptEnd::SpawnFailed {
                    error: format!(
                        "cannot create an output file in {}: {e}",
                        self.cfg.log_dir.display()
                    ),
                });
            }
        };
        let child_failed = |e: io::Error| AttemptEnd::SpawnFailed {
            error: format!("cannot open an output file for the task: {e}"),
        };
        let (stdout, child_out) = child_handle(stdout).map_err(child_failed)?;
        let (stderr, child_err) = child_handle(stderr).map_err(child_failed)?;
        Ok((stdout, child_out, stderr, child_err))
    }

    /// Keeps a finished task's output file for reuse, if nothing but us still has
    /// it open. Why reuse: creating and freeing an ext4 inode per stream was about
    /// a tenth of the CPU a `/bin/true` task costs the machine.
    pub(super) fn recycle(&self, stream: Stream) {
        if !stream.reusable {
            return;
        }
        let f = stream.file;
        let mut spare = self
            .spare_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() >= SPARE_FILES_MAX {
            return;
        }
        // The kernel grants a write lease only if no other open file description of
        // the file exists. The task's own description is separate from ours
        // (`child_handle`), so this fails while anything that escaped the process
        // group (or is still dying) holds the task's stdout; such a file is dropped,
        // never handed to another task.
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, integer arguments.
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
            return;
        }
        // SAFETY: as above; releases the lease we just took.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        // Truncating an empty file still costs a journal update; a stat is cheaper.
        let empty = f.metadata().is_ok_and(|m| m.len() == 0);
        if empty || f.set_len(0).is_ok() {
            spare.push(f);
        }
    }
}

impl Stream {
    /// Truncates the file to 0 if it exceeds `max`; the child's O_APPEND writes go on
    /// at the new end. Bytes written between the size check and the truncation are
    /// lost uncounted; the count is approximate by that much.
    pub(super) fn enforce_cap(&mut self, max: u64) {
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        let len = meta.len();
        if len > max {
            match self.file.set_len(0) {
                Ok(()) => self.dropped_bytes += len,
                Err(e) => tracing::warn!("cannot truncate an oversized output file: {e}"),
            }
        }
    }

    /// The last `tail_bytes` of the stream (after the dropped-output note, if any)
    /// and the total bytes written.
    pub(super) fn tail(&self, tail_bytes: usize) -> (Vec<u8>, u64) {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let total = self.dropped_bytes + len;
        let mut out = Vec::new();
        let mut room = tail_bytes;
        if self.dropped_bytes > 0 && tail_bytes > DROPPED_NOTE.len() {
            out.extend_from_slice(DROPPED_NOTE);
            room -= DROPPED_NOTE.len();
        }
        let n = len.min(room as u64);
        let start = out.len();
        // n <= room <= tail_bytes, a usize.
        out.resize(start + n as usize, 0);
        let mut filled = 0;
        while filled < n as usize {
            match self
                .file
                .read_at(&mut out[start + filled..], len - n + filled as u64)
            {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("cannot read an output file: {e}");
                    break;
                }
            }
        }
        out.truncate(start + filled);
        (out, total)
    }
}

/// Gives the child its own open file description of `file` (by reopening it
/// through /proc), so `Inner::recycle` can tell when the child's is closed. Without
/// /proc it falls back to a shared description and the file is not reused.
fn child_handle(file: File) -> io::Result<(Stream, File)> {
    let reopened = OpenOptions::new()
        .append(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let (child, reusable) = match reopened {
        Ok(c) => (c, true),
        Err(_) => (file.try_clone()?, false),
    };
    Ok((
        Stream {
            file,
            dropped_bytes: 0,
            reusable,
        },
        child,
    ))
}

/// Whether O_TMPFILE failed once in this process; then go straight to the fallback.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);
static FALLBACK_SEQ: AtomicU64 = AtomicU64::new(0);

/// An anonymous file in `dir` opened O_RDWR | O_APPEND.
fn open_output(dir: &Path) -> io::Result<File> {
    if !NO_TMPFILE.load(Ordering::Relaxed) {
        let r = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir);
        match r {
            Ok(f) => return Ok(f),
            // EOPNOTSUPP: the filesystem lacks it; EISDIR/EINVAL: the kernel does.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                NO_TMPFILE.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let name = format!(
        ".scalable-out-{}-{}",
        std::process::id(),
        FALLBACK_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::super::test_env::{assignment, env, env_with};
    use super::*;

    #[test]
    fn tails_and_byte_counts_of_both_streams() {
        let mut e = env();
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 3 });
        assert_eq!(r.stdout_tail, b"out\n");
        assert_eq!(r.stderr_tail, b"err\n");
        assert_eq!((r.stdout_bytes, r.stderr_bytes), (4, 4));
    }

    #[test]
    fn tail_is_the_last_tail_bytes() {
        let mut e = env_with(|c| c.tail_bytes = 4);
        let (_, r) = e.run(&assignment(1, &["sh", "-c", "printf 0123456789"]));
        assert_eq!(r.stdout_tail, b"6789");
        assert_eq!(r.stdout_bytes, 10);
    }

    #[test]
    fn oversized_output_is_truncated_and_counted() {
        let mut e = env_with(|c| c.output_bytes_max = 1000);
        // Write past the cap, then outlive one size check (every second).
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "head -c 5000 /dev/zero; sleep 2.5; echo end"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert_eq!(r.stdout_bytes, 5004);
        let mut expected = DROPPED_NOTE.to_vec();
        expected.extend_from_slice(b"end\n");
        assert_eq!(r.stdout_tail, expected);
    }

    #[test]
    fn reused_output_file_starts_empty() {
        let mut e = env();
        let (_, r) = e.run(&assignment(1, &["sh", "-c", "echo one; echo two >&2"]));
        assert_eq!(r.stdout_tail, b"one\n");
        let spare = e.exec.inner.spare_files.lock().expect("lock").len();
        assert_eq!(spare, 2, "both files kept for reuse");
        let (_, r) = e.run(&assignment(2, &["true"]));
        assert_eq!((r.stdout_bytes, r.stderr_bytes), (0, 0));
        assert!(r.stdout_tail.is_empty() && r.stderr_tail.is_empty());
    }

    /// Regression guard: output of a process that escaped the task's process group
    /// (setsid) must never show up in a later task's output via a reused file.
    #[test]
    fn escaped_writer_does_not_leak_into_the_next_task() {
        let mut e = env();
        let (_, r) = e.run(&assignment(
            1,
            &[
                "sh",
                "-c",
                "setsid sh -c 'sleep 0.4; echo LEAK; echo LEAK >&2' & sleep 0.1; exit 0",
            ],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let (_, r) = e.run(&assignment(2, &["sleep", "0.8"]));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert!(
            r.stdout_tail.is_empty() && r.stderr_tail.is_empty(),
            "{r:?}"
        );
    }
}
