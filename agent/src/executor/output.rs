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
//! always appends, so the file's length is exactly the bytes it wrote.
//!
//! # The size cap
//!
//! When a file holds more than `output_bytes_max` on disk, the watchdog frees
//! its start with `fallocate(PUNCH_HOLE)` up to a block boundary, keeping at
//! least the last `min(tail_bytes, output_bytes_max)` bytes. The length does not
//! change, so the count in `stdout_bytes`/`stderr_bytes` stays exact (no write
//! can slip in between a size check and a truncation), the tail is always the
//! true last bytes, and the disk holds at most the cap plus a block plus what
//! the task writes until the next check. The next check comes sooner the faster
//! a stream grows ([`Stream::enforce_cap`]). A tail whose beginning was freed
//! starts with `[scalable: earlier output dropped]`.
//!
//! A filesystem without hole punching (rare: ext4, xfs, btrfs and tmpfs have it)
//! gets the old way: the file is truncated to 0, the count is approximate by
//! what was written during the truncation and the last lines before it are lost.
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError};
use std::time::Duration;

use scalable_common::protocol::AttemptEnd;

use super::Inner;

/// Emptied output files an executor keeps for reuse.
const SPARE_FILES_MAX: usize = 64;
/// Starts a tail whose beginning was truncated away by the size cap.
const DROPPED_NOTE: &[u8] = b"[scalable: earlier output dropped]\n";
/// Holes are punched up to a multiple of this (a page; the block of ext4 and tmpfs).
const PUNCH_ALIGN_BYTES: u64 = 4096;
/// Longest time between two size checks of a running task's stream.
pub(super) const SIZE_CHECK_INTERVAL_MAX: Duration = Duration::from_millis(100);
/// Shortest time between two size checks, however fast a stream grows.
const SIZE_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);

pub(super) struct Stream {
    /// Our own open file description (O_RDWR | O_APPEND); the child got another.
    file: File,
    /// Bytes at the start of the file whose blocks were freed by the size cap
    /// (they read as zeros; the length still counts them).
    punched_bytes: u64,
    /// Bytes truncated away where holes cannot be punched (the fallback).
    truncated_bytes: u64,
    /// The length at the previous size check, to tell how fast the stream grows.
    checked_len: u64,
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
    /// Frees the start of the file if it holds more than `max` bytes on disk,
    /// keeping at least the last `keep` bytes (see the module doc). Returns when
    /// to check again: before the file can reach `max` at the pace it grew since
    /// the last check `since` ago, within the interval bounds.
    pub(super) fn enforce_cap(&mut self, max: u64, keep: u64, since: Duration) -> Duration {
        let Ok(meta) = self.file.metadata() else {
            return SIZE_CHECK_INTERVAL_MAX;
        };
        let len = meta.len();
        let grown = len.saturating_sub(self.checked_len);
        self.checked_len = len;
        if len - self.punched_bytes > max {
            let to = len.saturating_sub(keep) / PUNCH_ALIGN_BYTES * PUNCH_ALIGN_BYTES;
            if to > self.punched_bytes {
                self.free_until(to, len);
            }
        }
        let held = self.checked_len - self.punched_bytes;
        next_check(max.saturating_sub(held), grown, since)
    }

    /// Frees `[punched_bytes, to)`; where the filesystem cannot punch holes,
    /// truncates the file (`len` long at the check) to 0 instead.
    fn free_until(&mut self, to: u64, len: u64) {
        match punch_hole(&self.file, self.punched_bytes, to - self.punched_bytes) {
            Ok(()) => self.punched_bytes = to,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => match self.file.set_len(0) {
                Ok(()) => {
                    self.truncated_bytes += len;
                    self.checked_len = 0;
                }
                Err(e) => tracing::warn!("cannot truncate an oversized output file: {e}"),
            },
            Err(e) => tracing::warn!("cannot free the start of an oversized output file: {e}"),
        }
    }

    /// The last `tail_bytes` of the stream (after the dropped-output note, if
    /// any; never from the freed start) and the total bytes written.
    pub(super) fn tail(&self, tail_bytes: usize) -> (Vec<u8>, u64) {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        let total = self.truncated_bytes + len;
        let mut out = Vec::new();
        let mut room = tail_bytes;
        let dropped = self.punched_bytes > 0 || self.truncated_bytes > 0;
        if dropped && tail_bytes > DROPPED_NOTE.len() {
            out.extend_from_slice(DROPPED_NOTE);
            room -= DROPPED_NOTE.len();
        }
        let kept = len.saturating_sub(self.punched_bytes);
        let n = kept.min(room as u64);
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

/// When to check a stream again that can take `headroom` more bytes and grew
/// `grown` bytes in the last `since`: at half the time it would take to fill
/// the headroom at that pace.
fn next_check(headroom: u64, grown: u64, since: Duration) -> Duration {
    if grown == 0 {
        return SIZE_CHECK_INTERVAL_MAX;
    }
    let fill = since.mul_f64(headroom as f64 / grown as f64);
    (fill / 2).clamp(SIZE_CHECK_INTERVAL_MIN, SIZE_CHECK_INTERVAL_MAX)
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: frees the blocks of `[offset, offset + len)`.
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    loop {
        // SAFETY: fallocate on a descriptor we own, integer arguments.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Gives the child its own open file description of `file` (by reopening it
/// through /proc), so `Inner::recycle` can tell when the child's is closed. Without
/// /proc it falls back to a shared description and the file is not reused.
fn child_handle(file: File) -> io::Result<(Stream, File)> {
    let reopened = reopen_for_append(&file);
    let (child, reusable) = match reopened {
        Ok(c) => (c, true),
        Err(_) => (file.try_clone()?, false),
    };
    Ok((
        Stream {
            file,
            punched_bytes: 0,
            truncated_bytes: 0,
            checked_len: 0,
            reusable,
        },
        child,
    ))
}

/// The agent's `/proc/self/fd`, opened once: reopening a descriptor relative to
/// it skips walking `/proc/self` per stream (two per spawn; issue 15's profile
/// had the two opens at 7% of the agent's cpu).
static PROC_FD_DIR: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// A new open file description of `file`, write-only and appending.
fn reopen_for_append(file: &File) -> io::Result<File> {
    let dir = PROC_FD_DIR.get_or_init(|| {
        // SAFETY: a NUL-terminated literal path, integer flags.
        let fd = unsafe {
            libc::open(
                c"/proc/self/fd".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a descriptor we just opened and own from here on.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let Some(dir) = dir else {
        return OpenOptions::new()
            .append(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
    };
    let mut name = [0u8; 16];
    let len = fd_name(file.as_raw_fd(), &mut name);
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC;
    loop {
        // SAFETY: `name` is NUL-terminated (`fd_name`), `dir` a live descriptor.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name[..=len].as_ptr().cast(), flags) };
        if fd >= 0 {
            // SAFETY: a descriptor we just opened and own from here on.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes the decimal digits of `fd` and a NUL into `out`; returns the digits' length.
fn fd_name(fd: RawFd, out: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = u32::try_from(fd).unwrap_or(0);
    let mut k = 0;
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..k].iter().rev().enumerate() {
        out[i] = *d;
    }
    out[k] = 0;
    k
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
    use std::time::Duration;

    use std::io::Write;

    use super::super::test_env::{assignment, env, env_with};
    use super::*;

    #[test]
    fn fd_names_are_decimal_and_nul_terminated() {
        let mut out = [0xffu8; 16];
        for (fd, want) in [(0, "0"), (7, "7"), (10, "10"), (1_234_567, "1234567")] {
            let len = fd_name(fd, &mut out);
            assert_eq!(&out[..len], want.as_bytes());
            assert_eq!(out[len], 0);
        }
    }

    /// The child's handle is a description of its own (the lease check of
    /// `recycle` depends on it) that appends to the same file.
    #[test]
    fn reopened_handle_is_its_own_description_of_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = open_output(dir.path()).expect("file");
        let (stream, mut child) = child_handle(ours).expect("reopen");
        assert!(stream.reusable);
        child.write_all(b"abc").expect("write");
        assert_eq!(stream.tail(16), (b"abc".to_vec(), 3));
        // SAFETY: fcntl on a descriptor we own, integer arguments.
        let lease =
            unsafe { libc::fcntl(stream.file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_ne!(lease, 0, "the child's description is still open");
        drop(child);
        // SAFETY: as above.
        let lease =
            unsafe { libc::fcntl(stream.file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(lease, 0, "{}", io::Error::last_os_error());
    }

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

    /// The cap frees whole blocks only: a cap below one block is not enforced
    /// (the file holds at most the cap plus a block), and nothing is dropped.
    #[test]
    fn cap_below_a_block_drops_nothing() {
        let mut e = env_with(|c| c.output_bytes_max = 1000);
        // Write past the cap, then outlive several size checks.
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "head -c 5000 /dev/zero; sleep 1; echo end"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        assert_eq!(r.stdout_bytes, 5004);
        assert_eq!(r.stdout_tail.len(), 5004);
        assert!(r.stdout_tail.ends_with(b"\0end\n"));
    }

    /// Regression (issue 12, defect 6): the cap truncated the file to 0, so the
    /// lines written before a size check were lost from the tail (here all of
    /// them) and the count missed what was written during the truncation.
    #[test]
    fn capped_output_keeps_its_last_lines_and_exact_count() {
        let mut e = env_with(|c| c.output_bytes_max = 20_000);
        let (_, r) = e.run(&assignment(
            1,
            &["sh", "-c", "seq 1 30000; sleep 1; echo last"],
        ));
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
        let seq_bytes: u64 = (1..=30000u64).map(|n| n.to_string().len() as u64 + 1).sum();
        assert_eq!(r.stdout_bytes, seq_bytes + 5);
        assert!(r.stdout_tail.starts_with(DROPPED_NOTE), "{r:?}");
        let text = String::from_utf8_lossy(&r.stdout_tail[DROPPED_NOTE.len()..]).into_owned();
        assert!(text.ends_with("29999\n30000\nlast\n"), "{text}");
        assert!(!text.contains('\0'), "no freed bytes in the tail");
        assert!(text.len() >= 20_000 - DROPPED_NOTE.len(), "{}", text.len());
    }

    /// Regression (issue 12, defect 6): between two size checks (one a second)
    /// a fast writer took the disk far past the cap.
    #[test]
    fn disk_use_stays_near_the_cap() {
        const CAP: u64 = 2 << 20;
        let mut e = env_with(|c| c.output_bytes_max = CAP);
        let writer = "import sys, time\nb = b'x' * 65536\nfor i in range(1000):\n    sys.stdout.buffer.write(b); sys.stdout.flush(); time.sleep(0.002)\nprint('done')";
        e.exec.start(&assignment(1, &["python3", "-c", writer]));
        let mut held_max = 0;
        while e.exec.running() > 0 {
            if let Some(r) = e.exec.inner.lock().running.get(&1) {
                let blocks = std::os::unix::fs::MetadataExt::blocks(
                    &r.stdout.file.metadata().expect("stat"),
                );
                held_max = held_max.max(blocks * 512);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, r) = e.wait(1);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
        assert_eq!(r.stdout_bytes, 1000 * 65536 + 5);
        assert!(r.stdout_tail.ends_with(b"xxxxdone\n"), "{r:?}");
        assert!(held_max <= 8 * CAP, "{held_max} bytes on disk, cap {CAP}");
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
