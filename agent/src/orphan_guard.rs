//! Tasks die with the agent, even when the agent is SIGKILLed.
//!
//! The executor spawns without `pre_exec` (so no `PR_SET_PDEATHSIG`, see
//! `executor`), and a SIGKILL gives the agent no chance to clean up. So at start
//! the agent runs a tiny copy of itself (`scalable-agent __orphan-guard`) in its
//! own process group, with a pipe as its stdin. When the pipe closes (the agent
//! is gone, however it died) the guard SIGKILLs every group still listed and
//! exits.
//!
//! # The list: a table in shared memory
//!
//! The guard's stdout is a `memfd` the agent also maps: a table of
//! [`TABLE_SLOTS`] process-group ids. A task's group is stored in a free slot
//! right after its spawn and the slot is cleared when its leader exited (before
//! it is reaped, so the id cannot be reused in between). The guard reads the
//! table only once the pipe closed. So a task costs the agent two stores to
//! memory and no syscall, and the guard no wake-up at all. (Writing `+PGID` and
//! `-PGID` lines to the pipe instead cost two `write`s and two guard wake-ups
//! per task: 10% of the agent's cpu per `/bin/true` in issue 15's profile, and
//! the guard's own cpu besides.) Untouched pages of the table cost no memory.
//!
//! Where the table cannot be made (no `memfd_create`) or is full, a group is
//! told the old way, as a `+PGID` / `-PGID` line on the pipe, which the guard
//! reads as they come; it kills the union of both lists.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The argument that turns `scalable-agent` into the guard.
pub const GUARD_ARG: &str = "__orphan-guard";

/// Groups the shared table can list at once (256 KiB of address space; a
/// page of memory per 1,024 slots in use). Beyond it, lines on the pipe.
pub const TABLE_SLOTS: usize = 1 << 16;

/// The agent's end of the pipe to its guard.
pub struct OrphanGuard {
    pipe: Mutex<ChildStdin>,
    table: Option<Table>,
    _child: Child,
}

impl std::fmt::Debug for OrphanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrphanGuard")
    }
}

impl OrphanGuard {
    /// Starts the guard process. Must run before the executor exists (its reaper
    /// waits for any child; the guard only exits after the agent is gone).
    pub fn start() -> std::io::Result<OrphanGuard> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let table = match Table::new(TABLE_SLOTS) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("no shared table for the orphan guard ({e}); telling it by pipe");
                None
            }
        };
        let stdout = match &table {
            // The guard reads the table through its stdout (the same memfd).
            Some(t) => Stdio::from(t.file.try_clone()?),
            None => Stdio::null(),
        };
        let mut child = Command::new(exe)
            .arg(GUARD_ARG)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::null())
            // Its own group: a signal to the agent's group does not take it along.
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the orphan guard"))?;
        Ok(OrphanGuard {
            pipe: Mutex::new(pipe),
            table,
            _child: child,
        })
    }

    fn send(&self, line: String) {
        let mut p = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        // A dead guard must not stop the agent; it only loses the SIGKILL cover.
        let _ = p.write_all(line.as_bytes());
    }

    /// A task's process group exists.
    pub fn spawned(&self, pgid: i32) {
        if !self.table.as_ref().is_some_and(|t| t.insert(pgid)) {
            self.send(format!("+{pgid}\n"));
        }
    }

    /// A task's leader exited; its group is being killed and reaped.
    pub fn exited(&self, pgid: i32) {
        if !self.table.as_ref().is_some_and(|t| t.remove(pgid)) {
            self.send(format!("-{pgid}\n"));
        }
    }
}

/// The shared table of listed groups (agent side): a `memfd` mapped shared.
struct Table {
    file: File,
    slots: *const AtomicI32,
    len: usize,
    index: Mutex<Index>,
}

// SAFETY: `slots` points into a shared mapping owned by the table for its whole
// life and is only accessed through atomics; the index is behind a mutex.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

/// Which slot holds which group, and the slots free for reuse.
#[derive(Default)]
struct Index {
    slot_of: HashMap<i32, usize>,
    free: Vec<usize>,
    /// Slots below this were used at least once.
    used: usize,
}

impl Table {
    fn new(len: usize) -> std::io::Result<Table> {
        let bytes = len * std::mem::size_of::<i32>();
        // The raw syscall, not glibc's `memfd_create()` wrapper: that needs
        // glibc 2.27, and the dist build links against 2.17.
        // SAFETY: a NUL-terminated literal name, integer flags.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_memfd_create,
                c"scalable-orphan-guard".as_ptr(),
                libc::MFD_CLOEXEC,
            )
        } as libc::c_int;
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just made and own from here on.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(bytes as u64)?;
        // SAFETY: a fresh shared mapping of the whole file; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Table {
            file,
            slots: ptr.cast(),
            len,
            index: Mutex::new(Index::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, i: usize) -> &AtomicI32 {
        assert!(i < self.len);
        // SAFETY: in bounds of the mapping, which lives as long as `self`;
        // AtomicI32 has the layout of i32 and the mapping is page-aligned.
        unsafe { &*self.slots.add(i) }
    }

    /// Lists `pgid`; false if the table is full.
    fn insert(&self, pgid: i32) -> bool {
        let mut ix = self.lock();
        if ix.slot_of.contains_key(&pgid) {
            return true; // told again (an escaped group): listed once
        }
        let slot = match ix.free.pop() {
            Some(s) => s,
            None if ix.used < self.len => {
                ix.used += 1;
                ix.used - 1
            }
            None => return false,
        };
        self.slot(slot).store(pgid, Ordering::Release);
        ix.slot_of.insert(pgid, slot);
        true
    }

    /// Unlists `pgid`; false if it was not in the table.
    fn remove(&self, pgid: i32) -> bool {
        let mut ix = self.lock();
        let Some(slot) = ix.slot_of.remove(&pgid) else {
            return false;
        };
        self.slot(slot).store(0, Ordering::Release);
        ix.free.push(slot);
        true
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.slots as *mut libc::c_void, self.len * 4) };
    }
}

/// The guard's main: track groups until the pipe closes, then kill what is left.
pub fn run_guard() -> ! {
    // Ctrl-C or a SIGTERM meant for the agent must not take the guard first.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    let mut live = track(std::io::stdin().lock());
    // SAFETY: fd 1 is the shared table (or /dev/null, which reads as empty); the
    // guard writes nothing to stdout.
    let table = unsafe { File::from_raw_fd(1) };
    live.extend(listed(&table));
    for pgid in live {
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    std::process::exit(0)
}

/// The groups listed in a shared table file (nonzero slots above 1).
fn listed(table: &File) -> Vec<i32> {
    let mut bytes = vec![0u8; TABLE_SLOTS * 4];
    let mut got = 0;
    while got < bytes.len() {
        match table.read_at(&mut bytes[got..], got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    bytes[..got]
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&p| p > 1)
        .collect()
}

/// Reads `+PGID` / `-PGID` lines to the end; returns the groups still live.
fn track(input: impl BufRead) -> HashSet<i32> {
    let mut live = HashSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (op, num) = line.split_at(line.len().min(1));
        match (op, num.parse::<i32>()) {
            ("+", Ok(p)) if p > 1 => {
                live.insert(p);
            }
            ("-", Ok(p)) => {
                live.remove(&p);
            }
            _ => {}
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_groups_and_ignores_junk() {
        let input = "+100\n+200\n-100\nnonsense\n+1\n+-5\n+300\n-300\n";
        let live = track(input.as_bytes());
        assert_eq!(
            live,
            HashSet::from([200]),
            "pgid 1 and junk are never listed"
        );
    }

    /// Issue 15: groups are listed in shared memory, which the guard reads
    /// through its own descriptor of the file; slots are reused, a full table
    /// says so (the caller then uses the pipe).
    #[test]
    fn table_lists_live_groups_for_the_guard() {
        let t = Table::new(3).expect("memfd table");
        assert!(t.insert(100) && t.insert(200) && t.insert(300));
        assert!(!t.insert(400), "full");
        assert!(t.remove(200));
        assert!(!t.remove(200), "not listed twice");
        assert!(t.insert(400), "the freed slot is reused");
        assert!(t.insert(400), "listed again: still one slot");
        assert!(t.remove(300) && t.insert(1));
        let guard_side = t.file.try_clone().expect("dup");
        let mut got = listed(&guard_side);
        got.sort_unstable();
        assert_eq!(got, vec![100, 400], "pgid 1 is never killed");
    }
}
