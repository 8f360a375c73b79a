//! The `local` provider: each pilot is an agent process on the broker's host.
//!
//! - start: writes `PILOT_DIR/<pilot id>/agent.sh` (`exec` and the rendered
//!   command line) and runs `sh` on it with `SCALABLE_PILOT_ID` in its
//!   environment, output to `agent.log` next to it. The provider id is the
//!   process id.
//! - status: the processes this provider started are reaped with `try_wait`;
//!   a pid it did not start (after a broker restart) is looked up in `/proc`.
//! - stop: SIGTERM to each (the agent drains and leaves).
//!
//! The token: the agent reads the state dir's `agent.token` (`--token-file`).
//! The broker's own `--local-agents` (crate::local) is the older path for the
//! same thing; this one is what scaling drives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use scalable_common::manifest::Target;

use crate::render::{PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::{
    check_request, render_one, write_file, AgentId, CostEstimate, DeploymentProvider, PilotState,
    ProviderContext, ProviderError, StartRequest, StartedPilot,
};

pub struct LocalProvider {
    target: String,
    pilot_dir: PathBuf,
    env: Vec<(String, String)>,
    children: Mutex<HashMap<String, Child>>,
}

impl LocalProvider {
    pub fn new(target: &Target, ctx: &ProviderContext) -> LocalProvider {
        LocalProvider {
            target: target.name.clone(),
            pilot_dir: std::path::absolute(&ctx.pilot_dir).unwrap_or(ctx.pilot_dir.clone()),
            env: ctx.env.clone(),
            children: Mutex::new(HashMap::new()),
        }
    }

    fn script(&self, pilot_id: &str) -> PathBuf {
        self.pilot_dir.join(pilot_id).join("agent.sh")
    }

    fn line(&self, pilot_id: &str) -> String {
        format!(
            "SCALABLE_PILOT_ID={} {}",
            pilot_id,
            shell_join(&["sh".into(), self.script(pilot_id).display().to_string()])
        )
    }

    fn io(path: &std::path::Path, e: std::io::Error) -> ProviderError {
        ProviderError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        }
    }
}

impl Drop for LocalProvider {
    /// Children are not killed here (the pilots outlive a provider object),
    /// only reaped if they are already done.
    fn drop(&mut self) {
        if let Ok(children) = self.children.get_mut() {
            for child in children.values_mut() {
                let _ = child.try_wait();
            }
        }
    }
}

impl DeploymentProvider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    fn start(&self, req: &StartRequest) -> Result<Vec<StartedPilot>, ProviderError> {
        check_request(req)?;
        if !matches!(req.spec.provider, PilotProvider::Local) {
            return Err(ProviderError::Request(format!(
                "target {}: the spec is not a local pilot",
                self.target
            )));
        }
        let agent = render_one(&req.spec, 1)?;
        let mut started = Vec::new();
        for id in &req.pilot_ids {
            let line = self.line(id);
            if req.dry_run {
                started.push(StartedPilot {
                    pilot_id: id.clone(),
                    provider_id: "(dry run)".into(),
                    agent_id: AgentId::Exact(id.clone()),
                    commands: vec![line],
                });
                continue;
            }
            let script = self.script(id);
            let dir = script.parent().expect("a pilot dir");
            write_file(dir, "agent.sh", &format!("exec {}", agent.text()))?;
            let log_path = dir.join("agent.log");
            let log = scalable_common::private_files::create(&log_path)
                .map_err(|e| Self::io(&log_path, e))?;
            let err = log.try_clone().map_err(|e| Self::io(&log_path, e))?;
            let child = Command::new("sh")
                .arg(&script)
                .current_dir(dir)
                .env("SCALABLE_PILOT_ID", id)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .map_err(|e| Self::io(&script, e))?;
            let pid = child.id().to_string();
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid.clone(), child);
            started.push(StartedPilot {
                pilot_id: id.clone(),
                provider_id: pid,
                agent_id: AgentId::Exact(id.clone()),
                commands: vec![line],
            });
        }
        Ok(started)
    }

    fn status(&self, provider_ids: &[String]) -> Result<Vec<(String, PilotState)>, ProviderError> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        Ok(provider_ids
            .iter()
            .map(|id| {
                let state = match children.get_mut(id).map(|c| c.try_wait()) {
                    Some(Ok(None)) => PilotState::Running,
                    Some(Ok(Some(status))) => PilotState::Ended {
                        reason: status.to_string(),
                    },
                    Some(Err(e)) => PilotState::Ended {
                        reason: format!("cannot wait for it: {e}"),
                    },
                    None if id.parse::<u32>().is_ok()
                        && std::path::Path::new("/proc").join(id).exists() =>
                    {
                        PilotState::Running
                    }
                    None => PilotState::Ended {
                        reason: "process gone".into(),
                    },
                };
                (id.clone(), state)
            })
            .collect())
    }

    fn stop(&self, provider_ids: &[String]) -> Result<(), ProviderError> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for id in provider_ids {
            let Ok(pid) = id.parse::<i32>() else {
                continue;
            };
            if pid <= 0 {
                continue;
            }
            // Already gone is fine.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        Ok(())
    }

    fn commands(&self, req: &StartRequest) -> Result<Vec<String>, ProviderError> {
        check_request(req)?;
        render_one(&req.spec, 1)?;
        Ok(req.pilot_ids.iter().map(|id| self.line(id)).collect())
    }

    fn estimate_cost(&self, _spec: &PilotSpec, pilots: u32, hours: f64) -> CostEstimate {
        CostEstimate::known(
            0.0,
            pilots,
            hours,
            format!("local target {}: this host, no price", self.target),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use scalable_common::manifest::Provider;

    use super::super::testing;
    use super::*;

    #[test]
    fn local_pilots_start_run_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let fake_agent = testing::fake_agent(
            dir.path(),
            "#!/bin/sh\nprintf '%s\\n' \"$SCALABLE_PILOT_ID\" > pilot-id\nexec sleep 60\n",
        );
        let target = testing::target(
            "local",
            Provider::Local {
                threads_per_worker: Some(1),
                processes: true,
            },
            1,
        );
        let p = LocalProvider::new(&target, &ProviderContext::new(dir.path().join("pilots")));
        let mut spec = testing::spec(PilotProvider::Local);
        spec.agent_path = fake_agent.display().to_string();
        let req = StartRequest {
            pilot_ids: vec!["l-1".into()],
            spec,
            dry_run: false,
        };
        let started = p.start(&req).unwrap();
        let pid = vec![started[0].provider_id.clone()];
        assert_eq!(p.status(&pid).unwrap()[0].1, PilotState::Running);
        let id_file = dir.path().join("pilots/l-1/pilot-id");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The shell creates the file before printf fills it: wait for the line.
        let written = || std::fs::read_to_string(&id_file).is_ok_and(|s| s.ends_with('\n'));
        while !written() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(&id_file).unwrap(), "l-1\n");
        p.stop(&pid).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = p.status(&pid).unwrap()[0].1.clone();
            if let PilotState::Ended { reason } = &st {
                assert!(
                    reason.contains("SIGTERM") || reason.contains("signal"),
                    "{reason}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{st:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(p.estimate_cost(&req.spec, 3, 2.0).total, Some(0.0));
    }
}
