//! The `local` provider, minimal: agent processes started on the broker's host
//! (`--local-agents N`), untagged, killed when the broker stops.
//!
//! Agents read their credentials from the state dir's `agent.token` file, so the
//! token never appears on a command line (SPEC §8).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use scalable_common::private_files;
use tokio::process::{Child, Command};

pub struct LocalAgents {
    children: Vec<Child>,
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
    pub fn start(
        n: u32,
        cpus: Option<u32>,
        extra_args: &[String],
        exe: Option<&Path>,
        token_file: &Path,
        state_dir: &Path,
    ) -> Result<LocalAgents> {
        let mut children = Vec::new();
        if n == 0 {
            return Ok(LocalAgents { children });
        }
        let exe = agent_exe(exe)?;
        // Agents on one host share its memory: give each its part, unless told.
        let memory_arg = (n > 1 && !extra_args.iter().any(|a| a.starts_with("--memory")))
            .then(host_memory_bytes)
            .flatten()
            .map(|m| format!("--memory={}", m / n as u64));
        let log_dir = state_dir.join("local-agents");
        // Under the state dir: the owner's only, like everything there.
        private_files::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        for i in 1..=n {
            let log = private_files::create(&log_dir.join(format!("agent-{i}.log")))
                .with_context(|| format!("cannot create a log in {}", log_dir.display()))?;
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
            cmd.args(extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start local agent {}", exe.display()))?;
            children.push(child);
        }
        tracing::info!("started {n} local agent(s) with {}", exe.display());
        Ok(LocalAgents { children })
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

    /// SIGTERM every agent (they drain and exit), SIGKILL what is left after 5 s.
    pub async fn stop(&mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in self.children.iter_mut() {
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
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
