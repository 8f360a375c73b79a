//! The `local` provider, minimal: agent processes started on the broker's host
//! (`--local-agents N`), untagged, stopped when the broker stops.
//!
//! Agents read their credentials from the state dir's `agent.token` file, so the
//! token never appears on a command line (SPEC §8). Each is recorded in the
//! state dir (`record`): a broker restarted after a crash adopts the agents
//! that outlived it (they reconnect by themselves) and starts only the
//! missing ones.

mod record;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scalable_common::private_files;
use tokio::process::{Child, Command};

/// How long stopping waits for agents to drain before it kills them.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct LocalAgents {
    /// Started by this broker.
    children: Vec<Child>,
    /// Started by an earlier broker on this state dir and still running:
    /// `(number, pid)`; not our children, so watched through `/proc`.
    adopted: Vec<(u32, u32)>,
    /// `<state>/local-agents`: their logs and records.
    dir: PathBuf,
}

/// The agent binary: explicit, `$SCALABLE_AGENT_EXE`, or next to this executable.
pub fn agent_exe(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SCALABLE_AGENT_EXE") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let candidate = me.with_file_name("scalable-agent");
    if candidate.exists() {
        Ok(candidate)
    } else {
        anyhow::bail!(
            "cannot find scalable-agent next to {} (build it with cargo build --bins, or pass --agent-exe)",
            me.display()
        )
    }
}

impl LocalAgents {
    /// Makes sure local agents `local-1` to `local-n` run for the broker at
    /// `address`: adopts those an earlier broker on this state dir started
    /// that are still running and dial this address, starts the others, and
    /// stops the recorded ones it does not keep.
    pub fn start(
        n: u32,
        cpus: Option<u32>,
        extra_args: &[String],
        exe: Option<&Path>,
        access: (&Path, &str),
        state_dir: &Path,
    ) -> Result<LocalAgents> {
        let (token_file, address) = access;
        let dir = state_dir.join("local-agents");
        let mut agents = LocalAgents {
            children: Vec::new(),
            adopted: Vec::new(),
            dir,
        };
        agents.retire(n, address);
        if n == 0 {
            return Ok(agents);
        }
        let exe = agent_exe(exe)?;
        // Agents on one host share its memory: give each its part, unless told.
        let memory_arg = (n > 1 && !extra_args.iter().any(|a| a.starts_with("--memory")))
            .then(host_memory_bytes)
            .flatten()
            .map(|m| format!("--memory={}", m / n as u64));
        // Under the state dir: the owner's only, like everything there.
        private_files::create_dir_all(&agents.dir)
            .with_context(|| format!("cannot create {}", agents.dir.display()))?;
        for i in 1..=n {
            if let Some(r) = record::alive(&agents.dir, i) {
                agents.adopted.push((i, r.pid));
                continue;
            }
            let mut cmd = Command::new(&exe);
            cmd.arg("--token-file")
                .arg(token_file)
                .arg("--name")
                .arg(format!("local-{i}"));
            if let Some(c) = cpus {
                cmd.arg("--cpus").arg(c.to_string());
            }
            if let Some(m) = &memory_arg {
                cmd.arg(m);
            }
            cmd.args(extra_args);
            let child = agents.spawn(i, cmd, &exe, address)?;
            agents.children.push(child);
        }
        let adopted: Vec<u32> = agents.adopted.iter().map(|(_, pid)| *pid).collect();
        if !adopted.is_empty() {
            tracing::info!(
                "{} local agent(s) still running from before (pids {adopted:?}); not started again",
                adopted.len()
            );
        }
        tracing::info!(
            "started {} local agent(s) with {}",
            agents.children.len(),
            exe.display()
        );
        Ok(agents)
    }

    /// Starts local agent `i` with its log, and records it.
    fn spawn(&self, i: u32, mut cmd: Command, exe: &Path, address: &str) -> Result<Child> {
        let log = private_files::create(&self.dir.join(format!("agent-{i}.log")))
            .with_context(|| format!("cannot create a log in {}", self.dir.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start local agent {}", exe.display()))?;
        if let Some(pid) = child.id() {
            record::write(&self.dir, i, pid, address).with_context(|| {
                format!("cannot record local agent {i} in {}", self.dir.display())
            })?;
        }
        Ok(child)
    }

    /// Agents an earlier broker recorded that this one does not keep: beyond
    /// the `n` asked for now, or dialling another address than this broker's
    /// (they read it once, at start). Told to leave; they drain like on any stop.
    fn retire(&self, n: u32, address: &str) {
        for i in record::recorded(&self.dir) {
            let Some(r) = record::alive(&self.dir, i) else {
                record::remove(&self.dir, i);
                continue;
            };
            if i <= n && r.address == address {
                continue;
            }
            tracing::info!(
                "local agent {i} (pid {}, dialling {}) is not kept by this broker (--local-agents {n}, at {address}); stopping it",
                r.pid,
                r.address
            );
            let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
            record::remove(&self.dir, i);
        }
    }

    /// Resolves when any local agent exits with a failure (it could not connect).
    pub async fn wait_any_failed(&mut self) {
        if self.children.is_empty() {
            return std::future::pending().await;
        }
        loop {
            for c in self.children.iter_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    if !st.success() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGTERM every agent (they drain and exit), SIGKILL what is left after
    /// `STOP_GRACE`; their records go with them.
    pub async fn stop(&mut self) {
        let pids = self
            .children
            .iter()
            .filter_map(|c| c.id())
            .chain(self.adopted.iter().map(|(_, pid)| *pid));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in self.children.iter_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
        for (i, pid) in std::mem::take(&mut self.adopted) {
            let running = |dir: &Path| record::alive(dir, i).is_some_and(|r| r.pid == pid);
            while running(&self.dir) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if running(&self.dir) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        for i in record::recorded(&self.dir) {
            record::remove(&self.dir, i);
        }
    }
}

/// MemTotal of this host, from /proc/meminfo.
pub(crate) fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
