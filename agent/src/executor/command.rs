//! What the child is: its argv (the task's own, or a container runtime's around
//! it), its stdio, its working directory and its environment.
//!
//! Owns: building the [`Launch`] of one attempt and the container wrapping. It
//! must not spawn, open files or touch the executor's state; it only describes
//! the child, so the spawn path can stay a plain sequence of steps.
//!
//! Order matters in the environment: the task's own variables first, then the
//! runtime client's, then the agent's (SPEC §4) last, so a task cannot spoof them.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

use scalable_common::protocol::{Assignment, AttemptEnd};

use super::launch::Launch;
use super::{Inner, Placement};
use crate::runtime::{self, Wrapped};
use crate::stage;

/// The agent's variables every task gets (SPEC §4), passed into containers by name.
const TASK_ENV_NAMES: [&str; 5] = [
    "SCALABLE_RUN_ID",
    "SCALABLE_TASK_ID",
    "SCALABLE_ATTEMPT_ID",
    "SCALABLE_ATTEMPT",
    "SCALABLE_CPUS",
];

/// A task's command line after container wrapping.
pub(super) struct TaskArgv {
    /// The runtime's argv and client env; `None`: the task runs as it is.
    pub(super) wrapped: Option<Wrapped>,
    /// Runs in a podman/docker container, outside the client's process group.
    pub(super) detached_container: bool,
}

impl TaskArgv {
    /// The argv to spawn: the runtime's, or the task's own.
    pub(super) fn argv<'a>(&'a self, a: &'a Assignment) -> &'a [String] {
        self.wrapped.as_ref().map_or(&a.argv, |w| &w.argv)
    }
}

impl Inner {
    /// Step "build the command": wraps a task with a container in the runtime's
    /// command line, which passes the task's variables in by name. Exists so a
    /// container task is spawned like any other. Must not run the runtime (no
    /// `podman` call per spawn) and leaves a task without a container untouched
    /// (no allocation). A container task on an agent without a runtime fails here.
    pub(super) fn wrap_container(
        &self,
        a: &Assignment,
        place: &Placement,
        cwd: &Path,
        staged: bool,
        memory_limit: Option<u64>,
    ) -> Result<TaskArgv, AttemptEnd> {
        let (spec, rt) = match (&a.container, &self.cfg.runtime) {
            (None, _) => {
                return Ok(TaskArgv {
                    wrapped: None,
                    detached_container: false,
                })
            }
            (Some(_), None) => {
                return Err(AttemptEnd::SpawnFailed {
                    error: "no container runtime on this agent".into(),
                })
            }
            (Some(spec), Some(rt)) => (spec, rt),
        };
        let mut pass_env: Vec<&str> = TASK_ENV_NAMES.to_vec();
        if place.cpus.is_some() {
            pass_env.push("SCALABLE_CPU_LIST");
        }
        if place.gpus.is_some() {
            pass_env.push("CUDA_VISIBLE_DEVICES");
        }
        if staged {
            // Under the cwd, which is mounted at the same path.
            pass_env.push(stage::STAGE_ENV);
        }
        pass_env.extend(a.env.iter().map(|(k, _)| k.as_str()));
        let wrapped = runtime::wrap(
            rt,
            &runtime::WrapInput {
                attempt: a.attempt,
                cwd,
                spec,
                argv: &a.argv,
                pass_env: &pass_env,
                memory_limit_bytes: memory_limit,
                cpus: place.cpus.as_deref(),
                gpus: place.gpus.as_deref().unwrap_or(&[]),
            },
        );
        Ok(TaskArgv {
            wrapped: Some(wrapped),
            detached_container: rt.kind.detached(),
        })
    }
}

/// Step "the child's command": program, arguments, stdio, working directory,
/// environment and cores, as one [`Launch`]. Exists so the spawn sees one
/// finished description. The task leads its own process group (every kill
/// signals the group); the working directory is set only when the task names
/// one. `Err` says which string holds a NUL byte.
pub(super) fn task_launch(
    argv: &[String],
    stdio: (&File, &File),
    a: &Assignment,
    cwd: &Path,
    place: &Placement,
    wrapped: Option<&Wrapped>,
    stage_dir: Option<&Path>,
) -> Result<Launch, String> {
    let env = task_environment(a, place, wrapped, stage_dir);
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    // `@scalable-agent` is the agent's own binary (a warm task's trampoline).
    let mut launch = Launch::new(
        crate::warm::program(&argv[0]),
        &argv[1..],
        [dev_null()?, stdio.0.as_raw_fd(), stdio.1.as_raw_fd()],
        &env,
        &crate::credentials::CREDENTIAL_ENV,
        (!a.cwd.is_empty()).then_some(cwd),
    )?;
    if let Some(cpus) = &place.cpus {
        launch.bind(cpus);
    }
    Ok(launch)
}

/// `/dev/null`, opened once; every child's stdin. Why: opening the path per
/// spawn is a path walk that was 2% of the agent's cpu per `/bin/true`
/// (issue 15's profile); the child `dup2`s this one.
fn dev_null() -> Result<RawFd, String> {
    static DEV_NULL: OnceLock<Option<File>> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .map(|f| f.as_raw_fd())
        .ok_or_else(|| "cannot open /dev/null for the task's stdin".to_string())
}

/// Step "build the environment": the task's variables, the runtime client's,
/// then the agent's (SPEC §4), its cores and GPUs and its stage, over the
/// agent's own environment less its credentials
/// (`credentials::CREDENTIAL_ENV`). Exists to keep that order in one place:
/// ours go last so a task's env cannot spoof them (a later pair wins).
fn task_environment<'a>(
    a: &'a Assignment,
    place: &Placement,
    wrapped: Option<&'a Wrapped>,
    stage_dir: Option<&Path>,
) -> Vec<(&'a str, OsString)> {
    let mut env: Vec<(&str, OsString)> = Vec::with_capacity(a.env.len() + 8);
    env.extend(a.env.iter().map(|(k, v)| (k.as_str(), v.into())));
    if let Some(w) = wrapped {
        env.extend(w.client_env.iter().map(|(k, v)| (k.as_str(), v.into())));
    }
    env.push(("SCALABLE_RUN_ID", a.run.to_string().into()));
    env.push(("SCALABLE_TASK_ID", a.task.to_string().into()));
    env.push(("SCALABLE_ATTEMPT_ID", a.attempt.to_string().into()));
    env.push(("SCALABLE_ATTEMPT", a.attempt_number.to_string().into()));
    env.push(("SCALABLE_CPUS", a.resources.cpus.to_string().into()));
    if let Some(cpus) = &place.cpus {
        env.push(("SCALABLE_CPU_LIST", crate::cpuset::cpu_list(cpus).into()));
    }
    if let Some(gpus) = &place.gpus {
        env.push(("CUDA_VISIBLE_DEVICES", gpus.join(",").into()));
    }
    if let Some(dir) = stage_dir {
        env.push((stage::STAGE_ENV, dir.as_os_str().to_owned()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::super::test_env::{assignment, env};
    use scalable_common::protocol::AttemptEnd;
    use scalable_common::resources::Resources;

    #[test]
    fn task_sees_its_env() {
        let mut e = env();
        let mut a = assignment(5, &[
            "sh",
            "-c",
            "echo $SCALABLE_RUN_ID $SCALABLE_TASK_ID $SCALABLE_ATTEMPT_ID $SCALABLE_ATTEMPT $SCALABLE_CPUS $EXTRA",
        ]);
        a.attempt_number = 3;
        a.resources = Resources::cpus(4);
        a.env = vec![("EXTRA".into(), "yes".into())];
        let (_, r) = e.run(&a);
        assert_eq!(String::from_utf8_lossy(&r.stdout_tail), "7 105 5 3 4 yes\n");
    }

    /// stdin is `/dev/null` (one file shared by every task, see `dev_null`):
    /// a task that reads it sees the end at once, task after task.
    #[test]
    fn stdin_is_empty_for_every_task() {
        let mut e = env();
        for id in 1..=3 {
            let (_, r) = e.run(&assignment(id, &["sh", "-c", "cat; echo eof"]));
            assert_eq!(r.end, AttemptEnd::Exited { code: 0 });
            assert_eq!(r.stdout_tail, b"eof\n");
        }
    }

    #[test]
    fn container_task_without_a_runtime_is_spawn_failed() {
        let mut e = env();
        let mut a = assignment(1, &["true"]);
        a.container = Some(scalable_common::protocol::ContainerSpec {
            image: "localhost/busybox:local".into(),
            mounts: vec![],
            env: vec![],
        });
        let (started, r) = e.run(&a);
        assert!(started.is_none());
        assert_eq!(
            r.end,
            AttemptEnd::SpawnFailed {
                error: "no container runtime on this agent".into()
            }
        );
    }
}
