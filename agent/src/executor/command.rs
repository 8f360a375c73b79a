//! What the child is: its argv (the task's own, or a container runtime's around
//! it), its stdio, its working directory and its environment.
//!
//! Owns: building the `Command` of one attempt and the container wrapping. It
//! must not spawn, open files or touch the executor's state; it only describes
//! the child, so the spawn path can stay a plain sequence of steps.
//!
//! Order matters in the environment: the task's own variables first, then the
//! runtime client's, then the agent's (SPEC §4) last, so a task cannot spoof them.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use scalable_common::protocol::{Assignment, AttemptEnd};

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

/// Step "the child's command": program, arguments, stdio and process group.
/// Exists so the spawn sees one finished `Command`. `process_group(0)` makes the
/// task lead its own group (every kill signals the group); there must be no
/// `pre_exec` here (it would force std off posix_spawn, see `spawn`). The
/// working directory is set only when the task names one.
pub(super) fn task_command(
    argv: &[String],
    child_out: File,
    child_err: File,
    a: &Assignment,
    cwd: &Path,
) -> Command {
    // `@scalable-agent` is the agent's own binary (a warm task's trampoline).
    let mut cmd = Command::new(crate::warm::program(&argv[0]));
    cmd.args(&argv[1..])
        .stdin(dev_null())
        .stdout(child_out)
        .stderr(child_err)
        .process_group(0);
    if !a.cwd.is_empty() {
        cmd.current_dir(cwd);
    }
    cmd
}

/// `/dev/null` opened once; each child gets a duplicate. Why: `Stdio::null()`
/// opens the path again per spawn, a path walk that was 2% of the agent's cpu
/// per `/bin/true` (issue 15's profile); a `dup` is a table slot. Falls back to
/// `Stdio::null()` if the file cannot be opened or duplicated.
fn dev_null() -> Stdio {
    static DEV_NULL: OnceLock<Option<File>> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| File::open("/dev/null").ok())
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// Step "build the environment": the task's variables, the runtime client's,
/// then the agent's (SPEC §4), its cores and GPUs and its stage. Exists to keep
/// that order in one place: ours go last so a task's env cannot spoof them. Must
/// not read the agent's own environment (the child inherits it, less the
/// agent's credentials, `credentials::CREDENTIAL_ENV`).
pub(super) fn set_environment(
    cmd: &mut Command,
    a: &Assignment,
    place: &Placement,
    wrapped: Option<&Wrapped>,
    stage_dir: Option<&Path>,
) {
    // The agent's credentials are never inherited; a task's own `env:` may set them.
    for name in crate::credentials::CREDENTIAL_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(a.env.iter().map(|(k, v)| (k, v)));
    if let Some(w) = wrapped {
        cmd.envs(w.client_env.iter().map(|(k, v)| (k, v)));
    }
    // Ours last so a task's env cannot spoof them.
    cmd.env("SCALABLE_RUN_ID", a.run.to_string())
        .env("SCALABLE_TASK_ID", a.task.to_string())
        .env("SCALABLE_ATTEMPT_ID", a.attempt.to_string())
        .env("SCALABLE_ATTEMPT", a.attempt_number.to_string())
        .env("SCALABLE_CPUS", a.resources.cpus.to_string());
    if let Some(cpus) = &place.cpus {
        cmd.env("SCALABLE_CPU_LIST", crate::cpuset::cpu_list(cpus));
    }
    if let Some(gpus) = &place.gpus {
        cmd.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
    }
    if let Some(dir) = stage_dir {
        cmd.env(stage::STAGE_ENV, dir);
    }
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
