//! Which process each local agent is, kept in the state dir
//! (`local-agents/agent-N.pid`: its pid, start time and the broker address it
//! dials), so a broker restarted after a crash adopts the agents that outlived
//! it instead of starting more under the same names (issue 13).
//!
//! A pid alone could have been reused by the time the broker comes back; the
//! kernel's start time of the process (in clock ticks since boot, field 22 of
//! `/proc/PID/stat`) makes it the same process. Must not signal or start
//! processes (`local` does).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use scalable_common::private_files;
use serde::{Deserialize, Serialize};

/// One local agent's process as the broker that started it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    pub start_ticks: u64,
    /// The broker address it was given (it reads it once, at start).
    pub address: String,
}

/// Where local agent `n` (named `local-n`) is recorded.
pub fn path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("agent-{n}.pid"))
}

/// Records local agent `n`, just started as `pid` to dial `address`.
pub fn write(dir: &Path, n: u32, pid: u32, address: &str) -> io::Result<()> {
    let start_ticks = start_ticks(pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} is already gone"),
        )
    })?;
    let record = Record {
        pid,
        start_ticks,
        address: address.to_string(),
    };
    let text = serde_json::to_string(&record).map_err(io::Error::other)?;
    let mut f = private_files::create(&path(dir, n))?;
    f.write_all(format!("{text}\n").as_bytes())
}

/// Local agent `n` as recorded, if that process is still running.
pub fn alive(dir: &Path, n: u32) -> Option<Record> {
    let text = std::fs::read_to_string(path(dir, n)).ok()?;
    let r: Record = serde_json::from_str(text.trim()).ok()?;
    is_running(&r).then_some(r)
}

/// Forgets local agent `n` (it exited, or was told to).
pub fn remove(dir: &Path, n: u32) {
    let _ = std::fs::remove_file(path(dir, n));
}

/// The numbers of every recorded local agent.
pub fn recorded(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ns: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_prefix("agent-")?
                .strip_suffix(".pid")?
                .parse()
                .ok()
        })
        .collect();
    ns.sort_unstable();
    ns
}

/// The same process (not a reused pid), and not a zombie.
pub fn is_running(r: &Record) -> bool {
    stat(r.pid).is_some_and(|(state, ticks)| ticks == r.start_ticks && state != 'Z' && state != 'X')
}

fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, ticks)| ticks)
}

/// State and start time from `/proc/PID/stat`. The command name (field 2)
/// is in parentheses and may hold spaces or parentheses itself: the fields
/// are counted from the last `)`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(22 - 3)?.parse().ok()?;
    Some((state, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_process_is_alive_until_it_exits_and_a_reused_pid_is_not_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        write(dir.path(), 2, child.id(), "127.0.0.1:7420").unwrap();
        let r = alive(dir.path(), 2).expect("running");
        assert_eq!((r.pid, r.address.as_str()), (child.id(), "127.0.0.1:7420"));
        assert_eq!(recorded(dir.path()), vec![2]);
        let reused = Record {
            start_ticks: r.start_ticks + 1,
            ..r
        };
        assert!(!is_running(&reused), "another process under the same pid");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(alive(dir.path(), 2), None);
        remove(dir.path(), 2);
        assert!(recorded(dir.path()).is_empty());
    }

    #[test]
    fn this_process_is_running_and_its_stat_parses() {
        let pid = std::process::id();
        let ticks = start_ticks(pid).expect("own stat");
        assert!(is_running(&Record {
            pid,
            start_ticks: ticks,
            address: String::new(),
        }));
    }
}
