//! Test helpers: a spec every provider accepts, and a fake [`Runner`] that
//! records command lines and answers from a script, for the CLIs that are not
//! installed here (gcloud, a Kubernetes API server).

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Output};
use std::sync::Mutex;

use crate::render::{PilotProvider, PilotSpec};
use scalable_common::quote::shell_join;

use super::Runner;

pub const FP: &str = "abababababababababababababababababababababababababababababababab";

/// A stand-in for `scalable-agent`: the shell `script` as an executable
/// `fake-agent` in `dir`.
pub fn fake_agent(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
    let path = dir.join("fake-agent");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// A target `name` of `provider` with `max_workers` and every other key at
/// its default (a shared filesystem, no containers, tags or scaling).
pub fn target(
    name: &str,
    provider: scalable_common::manifest::Provider,
    max_workers: u32,
) -> scalable_common::manifest::Target {
    scalable_common::manifest::Target {
        name: name.into(),
        provider,
        max_workers,
        containers: scalable_common::manifest::ContainerPolicy::None,
        tags: vec![],
        adaptive: None,
        worker: scalable_common::manifest::WorkerShape::default(),
        shared_fs: true,
        storage: None,
    }
}

/// A spec like render.rs's tests use, for `provider`.
pub fn spec(provider: PilotProvider) -> PilotSpec {
    let cloud = !matches!(provider, PilotProvider::Local | PilotProvider::Slurm { .. });
    let vm = matches!(
        provider,
        PilotProvider::Ec2 { .. } | PilotProvider::Gcp { .. }
    );
    PilotSpec {
        target: "hpc".into(),
        tag: Some("demeter".into()),
        broker_address: "login01:7420".into(),
        fingerprint: FP.into(),
        token_file: (!cloud).then(|| "/home/alice/.scalable/agent.token".into()),
        token_env_secret: cloud.then(|| "demeter-agent-token".into()),
        cpus: 4,
        memory_bytes: Some(16 << 30),
        gpus: 0,
        image: Some("ghcr.io/example/scalable-agent:0.1".into()),
        idle_timeout: Some("5m".into()),
        lifetime: None,
        agent_path: if vm {
            "https://downloads.example.org/scalable-agent".into()
        } else {
            "/opt/scalable/bin/scalable-agent".into()
        },
        no_shared_fs: false,
        storage: None,
        count: 1,
        provider,
    }
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub line: String,
    pub stdin: Option<String>,
}

/// Answers calls in order from `answers` (exit code, stdout, stderr) and
/// records them.
#[derive(Default)]
pub struct FakeRunner {
    pub calls: Mutex<Vec<Call>>,
    pub answers: Mutex<VecDeque<(i32, String, String)>>,
}

impl FakeRunner {
    pub fn answering(answers: &[(i32, &str, &str)]) -> FakeRunner {
        FakeRunner {
            calls: Mutex::new(Vec::new()),
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|(c, o, e)| (*c, o.to_string(), e.to_string()))
                    .collect(),
            ),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.line.clone())
            .collect()
    }
}

impl Runner for FakeRunner {
    fn run(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        _env: &[(String, String)],
    ) -> std::io::Result<Output> {
        self.calls.lock().unwrap().push(Call {
            line: shell_join(argv),
            stdin: stdin.map(|s| String::from_utf8_lossy(s).into_owned()),
        });
        let (code, stdout, stderr) =
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((0, String::new(), String::new()));
        Ok(Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        })
    }
}
