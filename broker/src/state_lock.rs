//! One broker per state dir: an exclusive `flock` on `<state>/broker.lock`,
//! taken before anything else in the dir is written, with the holder's pid
//! and address in the file so a second broker can say who holds it.
//!
//! The kernel drops the lock with the process (a `kill -9` included), so a
//! restarted broker takes it at once; the file itself stays. Must not remove
//! the file (a broker waiting on it would lock an unlinked inode), write to it
//! without the lock, or let a child process inherit its descriptor (std opens
//! files close-on-exec; local agents must not keep the dir locked).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The lock file's name in the state dir.
pub const LOCK_FILE: &str = "broker.lock";
/// Reads of a holder's file that is being written (it writes twice: its pid
/// at once, its address once bound) before its content is reported unknown.
const HOLDER_READS_MAX: u32 = 5;

/// Why the state dir could not be held: one line naming the dir.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error("state dir {dir} is in use by another broker ({holder}); stop that broker first, or give this one another --state-dir")]
    Held { dir: String, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// What the holder says about itself in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// `host:port` as agents and the CLI reach it; unset until it has bound.
    pub address: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Some(a) => write!(f, "pid {}, listening on {a}", self.pid),
            None => write!(f, "pid {}, still starting", self.pid),
        }
    }
}

/// The state dir, held while this value lives.
#[derive(Debug)]
pub struct StateLock {
    file: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Takes the state dir (which must exist) or says who holds it. The
    /// holder's file is not modified by a refused broker.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StateLockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |source| StateLockError::Io {
            path: path.clone(),
            source,
        };
        // No truncation: the file may be another broker's, read below.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StateLockError::Held {
                    dir: state_dir.display().to_string(),
                    holder: read_holder(&path),
                })
            }
            Err((_, e)) => return Err(io_err(io::Error::from(e))),
        };
        scalable_common::private_files::restrict(&path).map_err(io_err)?;
        let mut lock = StateLock {
            file,
            path: path.clone(),
        };
        lock.write(&Holder {
            pid: std::process::id(),
            address: None,
        })
        .map_err(io_err)?;
        Ok(lock)
    }

    /// Records the address this broker serves on, once bound.
    pub fn announce(&mut self, address: &str) -> Result<(), StateLockError> {
        let holder = Holder {
            pid: std::process::id(),
            address: Some(address.to_string()),
        };
        self.write(&holder).map_err(|source| StateLockError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn write(&mut self, holder: &Holder) -> io::Result<()> {
        let text = serde_json::to_string(holder).map_err(io::Error::other)?;
        let file: &mut File = &mut self.file;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(format!("{text}\n").as_bytes())?;
        file.flush()
    }
}

/// The holder as it describes itself, for the refusal.
fn read_holder(path: &Path) -> String {
    for _ in 0..HOLDER_READS_MAX {
        let mut text = String::new();
        let read = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        let holder = read
            .ok()
            .and_then(|_| serde_json::from_str::<Holder>(text.trim()).ok());
        if let Some(h) = holder {
            return h.to_string();
        }
        // Caught between its truncate and its write.
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("its pid and address are not readable in {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StateLock::acquire(dir.path()).unwrap();
        first.announce("127.0.0.1:7420").unwrap();
        let before = std::fs::read(dir.path().join(LOCK_FILE)).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        let want = format!(
            "state dir {} is in use by another broker (pid {}, listening on 127.0.0.1:7420); stop that broker first, or give this one another --state-dir",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(err, want);
        let after = std::fs::read(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(before, after, "the refused broker changed nothing");
    }

    #[test]
    fn the_lock_is_free_again_once_its_holder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateLock::acquire(dir.path()).unwrap());
        let again = StateLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        let holder: Holder = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.address, None);
        drop(again);
    }
}
