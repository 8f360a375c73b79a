//! Which GPUs this agent may use, and which task holds which (SPEC §6).
//!
//! Owns: `--gpus auto|N` → a list of device ids, and the free-list that gives each
//! task its own ids. It does not run tasks; the executor puts a task's ids into its
//! `CUDA_VISIBLE_DEVICES`.
//!
//! Detection (`auto`): an existing `CUDA_VISIBLE_DEVICES` wins and is honoured, the
//! agent uses exactly those ids (a batch system gave them to the job, other
//! devices belong to someone else); else `nvidia-smi --query-gpu=index,uuid` lists
//! the devices; else there are none. An explicit `N` takes the first N ids of
//! `CUDA_VISIBLE_DEVICES` when set (never more than it names), else `0..N`.
//!
//! Invariant: [`detect`] runs `nvidia-smi` as a child process, so it must run
//! before the executor exists (its reaper waits for any child; see `executor`).
//! Ids handed to tasks are the agent's own ids (physical indexes or UUIDs as the
//! agent got them), so a task's `CUDA_VISIBLE_DEVICES` means the same devices as
//! the agent's did: CUDA resolves it against the physical devices, not nested.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `nvidia-smi` may take before it counts as "no GPUs" (a wedged driver
/// can make it hang for minutes).
const NVIDIA_SMI_WAIT_MAX: Duration = Duration::from_secs(10);
/// GPUs one agent may list at most; more is garbage from a broken tool.
const GPUS_MAX: usize = 1024;

/// `--gpus`: `auto` or an explicit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuFlag {
    Auto,
    Count(u32),
}

/// The device ids the agent may hand out and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub ids: Vec<String>,
    /// `"CUDA_VISIBLE_DEVICES"`, `"nvidia-smi"`, `"explicit"` or `"none"`.
    pub source: &'static str,
    /// Why `nvidia-smi` gave nothing, when it was tried and failed (for the log).
    pub note: Option<String>,
}

/// Detects GPUs. `cuda_visible` is the agent's `CUDA_VISIBLE_DEVICES`, `path` the
/// `PATH` to find `nvidia-smi` on (arguments, so tests need not touch the process
/// environment).
pub fn detect(flag: GpuFlag, cuda_visible: Option<&str>, path: Option<&OsStr>) -> Detected {
    let visible = cuda_visible.map(parse_cuda_visible_devices);
    match (flag, visible) {
        (GpuFlag::Count(n), Some(ids)) => Detected {
            ids: ids.into_iter().take(n as usize).collect(),
            source: "CUDA_VISIBLE_DEVICES",
            note: None,
        },
        (GpuFlag::Count(n), None) => Detected {
            ids: (0..n.min(GPUS_MAX as u32)).map(|i| i.to_string()).collect(),
            source: "explicit",
            note: None,
        },
        (GpuFlag::Auto, Some(ids)) => Detected {
            ids,
            source: "CUDA_VISIBLE_DEVICES",
            note: None,
        },
        (GpuFlag::Auto, None) => {
            let Some(exe) = crate::which::find_on_path("nvidia-smi", path) else {
                return Detected {
                    ids: Vec::new(),
                    source: "none",
                    note: None,
                };
            };
            match run_nvidia_smi(&exe, path) {
                Ok(out) => Detected {
                    ids: parse_nvidia_smi(&out),
                    source: "nvidia-smi",
                    note: None,
                },
                Err(e) => Detected {
                    ids: Vec::new(),
                    source: "none",
                    note: Some(format!("{}: {e}", exe.display())),
                },
            }
        }
    }
}

/// The ids named by `CUDA_VISIBLE_DEVICES`. Unset, empty, `-1` or `NoDevFiles`
/// mean none; like CUDA, the list stops at the first invalid entry (`"0,-1,1"` is
/// device 0 only). Entries may be indexes or UUIDs (`GPU-…`, `MIG-…`).
pub fn parse_cuda_visible_devices(value: &str) -> Vec<String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("NoDevFiles") {
        return Vec::new();
    }
    v.split(',')
        .map(str::trim)
        .take_while(|d| !d.is_empty() && !d.starts_with('-'))
        .take(GPUS_MAX)
        .map(str::to_string)
        .collect()
}

/// Device indexes from `nvidia-smi --query-gpu=index,uuid --format=csv,noheader`
/// (`"0, GPU-8f…"` per line). Lines that do not start with a number (warnings,
/// "No devices were found") are skipped.
pub fn parse_nvidia_smi(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|line| {
            let index = line.split(',').next()?.trim();
            (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
                .then(|| index.to_string())
        })
        .take(GPUS_MAX)
        .collect()
}

/// Runs `nvidia-smi` with a time limit; its stdout on success.
fn run_nvidia_smi(exe: &Path, path: Option<&OsStr>) -> Result<String, String> {
    let mut cmd = Command::new(exe);
    cmd.args(["--query-gpu=index,uuid", "--format=csv,noheader"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // Read on a thread so a hung nvidia-smi cannot block the agent's start.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + NVIDIA_SMI_WAIT_MAX;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {NVIDIA_SMI_WAIT_MAX:?}"));
            }
            // Someone else reaped it: only possible when an executor's reaper runs in
            // this process (tests; the agent detects before it makes one). Its
            // output is complete (the pipe reached EOF), the status is lost.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break None,
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    match status {
        Some(s) if !s.success() => Err(format!("exited with {s}")),
        _ => Ok(out),
    }
}

/// The agent's GPUs, each held by at most one task at a time.
#[derive(Debug, Clone, Default)]
pub struct GpuPool {
    /// Free ids, in the agent's order; tasks take from the front.
    free: Vec<String>,
    total: usize,
}

impl GpuPool {
    pub fn new(ids: Vec<String>) -> GpuPool {
        GpuPool {
            total: ids.len(),
            free: ids,
        }
    }

    /// Whether the agent has any GPU (then every task's `CUDA_VISIBLE_DEVICES` is
    /// set, to `""` for a task that asked for none).
    pub fn has_gpus(&self) -> bool {
        self.total > 0
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// `n` distinct free ids, or `None` (and nothing taken) if fewer are free.
    pub fn take(&mut self, n: u32) -> Option<Vec<String>> {
        let n = n as usize;
        if n > self.free.len() {
            return None;
        }
        Some(self.free.drain(..n).collect())
    }

    /// Returns ids a finished task held.
    pub fn give(&mut self, ids: Vec<String>) {
        debug_assert!(
            ids.iter().all(|id| !self.free.contains(id)),
            "gpu ids given back twice: {ids:?} into {:?}",
            self.free
        );
        self.free.extend(ids);
        debug_assert!(self.free.len() <= self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A temp dir with an executable `nvidia-smi` script that prints `output`.
    fn fake_nvidia_smi(script_body: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("nvidia-smi");
        std::fs::write(&exe, format!("#!/bin/sh\n{script_body}\n")).expect("write");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    #[test]
    fn cuda_visible_devices_forms() {
        assert_eq!(parse_cuda_visible_devices("0,1"), vec!["0", "1"]);
        assert_eq!(parse_cuda_visible_devices(" 2 , 3 "), vec!["2", "3"]);
        assert_eq!(parse_cuda_visible_devices("0,-1,1"), vec!["0"]);
        assert!(parse_cuda_visible_devices("").is_empty());
        assert!(parse_cuda_visible_devices("-1").is_empty());
        assert!(parse_cuda_visible_devices("NoDevFiles").is_empty());
        assert_eq!(
            parse_cuda_visible_devices("GPU-8f6e1c2a,MIG-1234"),
            vec!["GPU-8f6e1c2a", "MIG-1234"]
        );
    }

    #[test]
    fn nvidia_smi_csv_lines() {
        let out = "0, GPU-aaaa\n1, GPU-bbbb\n\nWARNING: infoROM is corrupted\n";
        assert_eq!(parse_nvidia_smi(out), vec!["0", "1"]);
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
    }

    #[test]
    fn fake_nvidia_smi_on_path_drives_detection() {
        let dir = fake_nvidia_smi(
            r#"[ "$1" = --query-gpu=index,uuid ] || exit 9
echo "0, GPU-aaaa"
echo "1, GPU-bbbb"
echo "2, GPU-cccc""#,
        );
        let path = dir.path().as_os_str();
        let d = detect(GpuFlag::Auto, None, Some(path));
        assert_eq!(d.ids, vec!["0", "1", "2"], "{d:?}");
        assert_eq!(d.source, "nvidia-smi");
    }

    #[test]
    fn cuda_visible_devices_wins_over_nvidia_smi() {
        let dir = fake_nvidia_smi("echo '0, GPU-a'; echo '1, GPU-b'; echo '2, GPU-c'");
        let d = detect(GpuFlag::Auto, Some("2,0"), Some(dir.path().as_os_str()));
        assert_eq!(d.ids, vec!["2", "0"]);
        assert_eq!(d.source, "CUDA_VISIBLE_DEVICES");
        // Set but empty: the job was given no GPUs, even though the host has some.
        let d = detect(GpuFlag::Auto, Some(""), Some(dir.path().as_os_str()));
        assert!(d.ids.is_empty());
    }

    #[test]
    fn failing_or_missing_nvidia_smi_means_no_gpus() {
        let dir = fake_nvidia_smi("echo 'NVIDIA-SMI has failed' >&2; exit 9");
        let d = detect(GpuFlag::Auto, None, Some(dir.path().as_os_str()));
        // (The note says "exited with 9" unless an executor test's reaper, which
        // waits for any child of this test process, took the status first.)
        assert!(d.ids.is_empty(), "{d:?}");
        let empty = tempfile::tempdir().expect("tempdir");
        let d = detect(GpuFlag::Auto, None, Some(empty.path().as_os_str()));
        assert_eq!((d.ids.len(), d.source, d.note), (0, "none", None));
    }

    #[test]
    fn explicit_count_is_capped_by_cuda_visible_devices() {
        assert_eq!(detect(GpuFlag::Count(2), None, None).ids, vec!["0", "1"]);
        assert_eq!(
            detect(GpuFlag::Count(3), Some("5,7"), None).ids,
            vec!["5", "7"]
        );
        assert_eq!(detect(GpuFlag::Count(1), Some("5,7"), None).ids, vec!["5"]);
    }

    #[test]
    fn pool_hands_out_distinct_ids() {
        let mut p = GpuPool::new(vec!["0".into(), "1".into(), "2".into()]);
        let a = p.take(2).expect("two free");
        let b = p.take(1).expect("one free");
        assert!(p.take(1).is_none());
        assert!(a.iter().all(|id| !b.contains(id)));
        p.give(a);
        assert_eq!(p.free(), 2);
        assert!(p.take(3).is_none(), "nothing taken on failure");
        assert_eq!(p.free(), 2);
        p.give(b);
        assert_eq!(p.free(), 3);
        assert!(p.has_gpus());
        assert!(!GpuPool::new(Vec::new()).has_gpus());
    }
}
