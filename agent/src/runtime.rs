//! Container runtimes: which this agent can use, and the command that runs a task
//! inside one (SPEC §3 `components.image`, §6 Runtime).
//!
//! Owns: detection (`--runtime auto|none|NAME`) and the pure argv builders. It
//! runs nothing itself; the executor spawns what [`wrap`] builds, and the stop
//! and kill commands of [`stop_argv`]/[`kill_argv`] through its own machinery.
//!
//! Detection only looks for executables on `PATH` (apptainer, singularity, podman,
//! docker, ch-run), in that order; `auto` uses the first found and advertises all
//! of them. Docker counts only if its daemon's socket exists (`DOCKER_HOST` when it
//! is a `unix://` address, else `/var/run/docker.sock`; a `tcp://` host is trusted
//! as is): a client without a daemon is common (this machine kind has one) and
//! would fail every task. Nothing is run: detection may happen after the executor
//! exists, and asking `docker info` costs a second per agent start.
//!
//! How a task runs inside (declared in ARCHITECTURE.md):
//! - the task's cwd is mounted at the same path and is the working directory, so
//!   relative paths in argv, inputs and outputs mean the same inside and out;
//! - the component's `mounts` (`host:container`, host relative to the cwd) and `env`;
//! - the agent's own variables (`SCALABLE_*`, `CUDA_VISIBLE_DEVICES`, the task's
//!   env) are passed in by name: podman/docker `-e NAME`, apptainer/charliecloud
//!   pass the client's environment through anyway;
//! - podman/docker: `--rm --network host`, a name `scalable-<attempt>` so the agent
//!   can stop the container, `--memory` = the memory limit (the container's
//!   processes are not the client's descendants, so sampling cannot see them; the
//!   runtime's cgroup enforces it, and exit 137 then means MEMORY_EXHAUSTION),
//!   `--cpuset-cpus` when the task is bound to cores, and the task's GPUs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scalable_common::protocol::{AttemptId, ContainerSpec};

/// The runtimes we know, in `auto` preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Apptainer,
    Singularity,
    Podman,
    Docker,
    Charliecloud,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 5] = [
        RuntimeKind::Apptainer,
        RuntimeKind::Singularity,
        RuntimeKind::Podman,
        RuntimeKind::Docker,
        RuntimeKind::Charliecloud,
    ];

    /// The name advertised to the broker and accepted by `--runtime`.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Apptainer => "apptainer",
            RuntimeKind::Singularity => "singularity",
            RuntimeKind::Podman => "podman",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Charliecloud => "charliecloud",
        }
    }

    /// The executable looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            RuntimeKind::Charliecloud => "ch-run",
            other => other.name(),
        }
    }

    pub fn from_name(s: &str) -> Option<RuntimeKind> {
        RuntimeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether containers outlive their client (a daemon or conmon owns them), so
    /// stopping the client's process group is not enough.
    pub fn detached(self) -> bool {
        matches!(self, RuntimeKind::Podman | RuntimeKind::Docker)
    }
}

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFlag {
    Auto,
    None,
    Only(RuntimeKind),
}

impl std::str::FromStr for RuntimeFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<RuntimeFlag, String> {
        match s {
            "auto" => Ok(RuntimeFlag::Auto),
            "none" => Ok(RuntimeFlag::None),
            _ => RuntimeKind::from_name(s)
                .map(RuntimeFlag::Only)
                .ok_or_else(|| {
                    "expected auto, none, apptainer, singularity, podman, docker or charliecloud"
                        .to_string()
                }),
        }
    }
}

/// A runtime this agent can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub kind: RuntimeKind,
    /// The client executable, found on `PATH`.
    pub program: PathBuf,
    /// Extra environment for the client (`DOCKER_HOST` when the agent had one).
    pub env: Vec<(String, String)>,
}

/// Finds the runtimes `flag` allows, preferred first. `path` is the `PATH` to look
/// on and `env` looks up the agent's other variables (`DOCKER_HOST`); arguments,
/// so tests need not change the process environment. An explicit runtime that is
/// not usable is an error that says why.
pub fn detect(
    flag: RuntimeFlag,
    path: Option<&OsStr>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Runtime>, String> {
    let kinds: Vec<RuntimeKind> = match flag {
        RuntimeFlag::None => return Ok(Vec::new()),
        RuntimeFlag::Auto => RuntimeKind::ALL.to_vec(),
        RuntimeFlag::Only(k) => vec![k],
    };
    let mut found = Vec::new();
    for kind in kinds {
        match usable(kind, path, &env) {
            Ok(rt) => found.push(rt),
            Err(why) if flag != RuntimeFlag::Auto => return Err(why),
            Err(_) => {}
        }
    }
    Ok(found)
}

fn usable(
    kind: RuntimeKind,
    path: Option<&OsStr>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Runtime, String> {
    let program = crate::which::find_on_path(kind.program(), path)
        .ok_or_else(|| format!("{} not found on PATH", kind.program()))?;
    let mut rt_env = Vec::new();
    if kind == RuntimeKind::Docker {
        let host = env("DOCKER_HOST").filter(|h| !h.is_empty());
        let socket = match host.as_deref() {
            Some(h) => h.strip_prefix("unix://").map(PathBuf::from),
            None => Some(PathBuf::from("/var/run/docker.sock")),
        };
        if let Some(sock) = socket {
            if !sock.exists() {
                return Err(format!(
                    "docker is on PATH but its daemon socket {} does not exist (hint: start dockerd or set DOCKER_HOST)",
                    sock.display()
                ));
            }
        }
        if let Some(h) = host {
            rt_env.push(("DOCKER_HOST".to_string(), h));
        }
    }
    Ok(Runtime {
        kind,
        program,
        env: rt_env,
    })
}

/// The container's name: known in advance, so the agent can stop it by name.
pub fn container_name(attempt: AttemptId) -> String {
    format!("scalable-{attempt}")
}

/// What the executor knows about one attempt when it wraps it.
#[derive(Debug, Clone)]
pub struct WrapInput<'a> {
    pub attempt: AttemptId,
    /// The task's absolute working directory on the host.
    pub cwd: &'a Path,
    pub spec: &'a ContainerSpec,
    pub argv: &'a [String],
    /// Variables set on the client that must reach the task (by name).
    pub pass_env: &'a [&'a str],
    /// The memory limit in bytes, if any.
    pub memory_limit_bytes: Option<u64>,
    /// Cores the task is bound to, if any.
    pub cpus: Option<&'a [usize]>,
    /// GPU ids the task holds (empty: none).
    pub gpus: &'a [String],
}

/// The client command line and the extra environment for the client process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    pub argv: Vec<String>,
    pub client_env: Vec<(String, String)>,
}

/// The argv that runs `w.argv` inside runtime `rt`.
pub fn wrap(rt: &Runtime, w: &WrapInput<'_>) -> Wrapped {
    let cwd = w.cwd.to_string_lossy().into_owned();
    let mounts: Vec<(String, String)> = w
        .spec
        .mounts
        .iter()
        .map(|(host, cont)| (absolute(w.cwd, host), cont.clone()))
        .collect();
    // The cwd at the same path, unless a declared mount already targets it.
    let cwd_mounted = mounts.iter().any(|(_, c)| c.trim_end_matches('/') == cwd);
    let mut argv = vec![rt.program.to_string_lossy().into_owned()];
    let mut client_env = rt.env.clone();
    match rt.kind {
        RuntimeKind::Podman | RuntimeKind::Docker => {
            argv.extend(["run", "--rm", "--network", "host", "--name"].map(String::from));
            argv.push(container_name(w.attempt));
            push_mounts(&mut argv, "-v", &mounts, cwd_mounted, &cwd);
            push_oci_options(&mut argv, rt.kind, w);
            argv.push("-w".into());
            argv.push(cwd);
            argv.push(w.spec.image.clone());
        }
        RuntimeKind::Apptainer | RuntimeKind::Singularity => {
            argv.push("exec".into());
            push_mounts(&mut argv, "--bind", &mounts, cwd_mounted, &cwd);
            for (k, v) in &w.spec.env {
                argv.push("--env".into());
                argv.push(format!("{k}={v}"));
            }
            if !w.gpus.is_empty() {
                argv.push("--nv".into());
            }
            argv.push("--pwd".into());
            argv.push(cwd);
            argv.push(w.spec.image.clone());
        }
        RuntimeKind::Charliecloud => {
            push_mounts(&mut argv, "-b", &mounts, cwd_mounted, &cwd);
            argv.push("--cd".into());
            argv.push(cwd);
            argv.push(w.spec.image.clone());
            argv.push("--".into());
            // ch-run passes the client's environment in (0.31 has no VAR=VALUE
            // form of --set-env), so the component's env goes on the client.
            client_env.extend(w.spec.env.iter().cloned());
        }
    }
    argv.extend(w.argv.iter().cloned());
    Wrapped { argv, client_env }
}

/// The declared mounts, then the cwd at its own path unless one targets it;
/// each as `flag host:container`.
fn push_mounts(
    argv: &mut Vec<String>,
    flag: &str,
    mounts: &[(String, String)],
    cwd_mounted: bool,
    cwd: &str,
) {
    for (host, cont) in mounts {
        argv.push(flag.into());
        argv.push(format!("{host}:{cont}"));
    }
    if !cwd_mounted {
        argv.push(flag.into());
        argv.push(format!("{cwd}:{cwd}"));
    }
}

/// Podman's and docker's options after the mounts: the component's env, the
/// task's variables by name, memory, cores and GPUs.
fn push_oci_options(argv: &mut Vec<String>, kind: RuntimeKind, w: &WrapInput<'_>) {
    for (k, v) in &w.spec.env {
        argv.push("-e".into());
        argv.push(format!("{k}={v}"));
    }
    // By name: the value comes from the client's environment.
    for name in w.pass_env {
        argv.push("-e".into());
        argv.push((*name).to_string());
    }
    if let Some(bytes) = w.memory_limit_bytes {
        argv.push("--memory".into());
        argv.push(bytes.to_string());
    }
    if let Some(cpus) = w.cpus {
        argv.push("--cpuset-cpus".into());
        argv.push(crate::cpuset::cpu_list(cpus));
    }
    if !w.gpus.is_empty() {
        if kind == RuntimeKind::Docker {
            // Docker parses the value as CSV; the quotes keep the list whole.
            argv.push("--gpus".into());
            argv.push(format!("\"device={}\"", w.gpus.join(",")));
        } else {
            // Podman: the CDI names of the NVIDIA container toolkit.
            for id in w.gpus {
                argv.push("--device".into());
                argv.push(format!("nvidia.com/gpu={id}"));
            }
        }
    }
}

/// Stops the attempt's container: SIGTERM, SIGKILL after `grace` (rounded up to
/// whole seconds). `None` for runtimes whose container dies with the client's
/// process group.
pub fn stop_argv(rt: &Runtime, attempt: AttemptId, grace: Duration) -> Option<Vec<String>> {
    if !rt.kind.detached() {
        return None;
    }
    let secs = grace.as_millis().div_ceil(1000).max(1);
    Some(vec![
        rt.program.to_string_lossy().into_owned(),
        "stop".into(),
        "-t".into(),
        secs.to_string(),
        container_name(attempt),
    ])
}

/// Kills and removes the attempt's container at once (the agent is leaving).
pub fn kill_argv(rt: &Runtime, attempt: AttemptId) -> Option<Vec<String>> {
    if !rt.kind.detached() {
        return None;
    }
    Some(vec![
        rt.program.to_string_lossy().into_owned(),
        "rm".into(),
        "-f".into(),
        container_name(attempt),
    ])
}

fn absolute(cwd: &Path, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        let rel = p.strip_prefix("./").unwrap_or(p);
        cwd.join(rel).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rt(kind: RuntimeKind) -> Runtime {
        Runtime {
            kind,
            program: PathBuf::from(format!("/usr/bin/{}", kind.program())),
            env: Vec::new(),
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "ghcr.io/jgcri/demeter:2.0.1".into(),
            mounts: vec![("./demeter_data".into(), "/data".into())],
            env: vec![("DEMETER_DATA".into(), "/data".into())],
        }
    }

    fn input<'a>(spec: &'a ContainerSpec, argv: &'a [String]) -> WrapInput<'a> {
        WrapInput {
            attempt: 42,
            cwd: Path::new("/work/run"),
            spec,
            argv,
            pass_env: &["SCALABLE_RUN_ID", "SCALABLE_CPUS"],
            memory_limit_bytes: None,
            cpus: None,
            gpus: &[],
        }
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn podman_command_line() {
        let s = spec();
        let a = argv(&["python", "-m", "demeter"]);
        let w = wrap(&rt(RuntimeKind::Podman), &input(&s, &a));
        assert_eq!(
            w.argv.join(" "),
            "/usr/bin/podman run --rm --network host --name scalable-42 \
             -v /work/run/demeter_data:/data -v /work/run:/work/run \
             -e DEMETER_DATA=/data -e SCALABLE_RUN_ID -e SCALABLE_CPUS \
             -w /work/run ghcr.io/jgcri/demeter:2.0.1 python -m demeter"
        );
        assert!(w.client_env.is_empty());
    }

    #[test]
    fn docker_with_limits_cores_and_gpus() {
        let s = spec();
        let a = argv(&["true"]);
        let mut i = input(&s, &a);
        i.memory_limit_bytes = Some(120 << 20);
        i.cpus = Some(&[2, 3]);
        let gpus = vec!["0".to_string(), "1".to_string()];
        i.gpus = &gpus;
        let mut docker = rt(RuntimeKind::Docker);
        docker.env = vec![("DOCKER_HOST".into(), "unix:///tmp/d.sock".into())];
        let w = wrap(&docker, &i);
        let line = w.argv.join(" ");
        assert!(
            line.contains(
                "--memory 125829120 --cpuset-cpus 2,3 --gpus \"device=0,1\" -w /work/run ghcr.io"
            ),
            "{line}"
        );
        assert_eq!(w.client_env, docker.env, "DOCKER_HOST reaches the client");
        let w = wrap(&rt(RuntimeKind::Podman), &i);
        assert!(
            w.argv
                .join(" ")
                .contains("--device nvidia.com/gpu=0 --device nvidia.com/gpu=1"),
            "{:?}",
            w.argv
        );
    }

    #[test]
    fn apptainer_and_singularity_command_lines() {
        let s = spec();
        let a = argv(&["python", "x.py"]);
        for kind in [RuntimeKind::Apptainer, RuntimeKind::Singularity] {
            let w = wrap(&rt(kind), &input(&s, &a));
            assert_eq!(
                w.argv.join(" "),
                format!(
                    "/usr/bin/{} exec --bind /work/run/demeter_data:/data \
                     --bind /work/run:/work/run --env DEMETER_DATA=/data \
                     --pwd /work/run ghcr.io/jgcri/demeter:2.0.1 python x.py",
                    kind.name()
                )
            );
        }
        let gpus = vec!["3".to_string()];
        let mut i = input(&s, &a);
        i.gpus = &gpus;
        let w = wrap(&rt(RuntimeKind::Apptainer), &i);
        assert!(w.argv.contains(&"--nv".to_string()), "{:?}", w.argv);
    }

    #[test]
    fn charliecloud_command_line_sets_env_on_the_client() {
        let s = spec();
        let a = argv(&["sh", "-c", "echo hi"]);
        let w = wrap(&rt(RuntimeKind::Charliecloud), &input(&s, &a));
        assert_eq!(
            w.argv,
            argv(&[
                "/usr/bin/ch-run",
                "-b",
                "/work/run/demeter_data:/data",
                "-b",
                "/work/run:/work/run",
                "--cd",
                "/work/run",
                "ghcr.io/jgcri/demeter:2.0.1",
                "--",
                "sh",
                "-c",
                "echo hi"
            ])
        );
        assert_eq!(w.client_env, vec![("DEMETER_DATA".into(), "/data".into())]);
    }

    #[test]
    fn cwd_is_not_mounted_twice() {
        let s = ContainerSpec {
            image: "img".into(),
            mounts: vec![("/work/run".into(), "/work/run/".into())],
            env: vec![],
        };
        let a = argv(&["true"]);
        let w = wrap(&rt(RuntimeKind::Docker), &input(&s, &a));
        assert_eq!(
            w.argv.iter().filter(|x| x.as_str() == "-v").count(),
            1,
            "{:?}",
            w.argv
        );
    }

    #[test]
    fn stop_and_kill_only_for_detached_runtimes() {
        let grace = Duration::from_millis(1500);
        assert_eq!(
            stop_argv(&rt(RuntimeKind::Podman), 7, grace),
            Some(argv(&["/usr/bin/podman", "stop", "-t", "2", "scalable-7"]))
        );
        assert_eq!(
            kill_argv(&rt(RuntimeKind::Docker), 7),
            Some(argv(&["/usr/bin/docker", "rm", "-f", "scalable-7"]))
        );
        assert_eq!(stop_argv(&rt(RuntimeKind::Apptainer), 7, grace), None);
        assert_eq!(kill_argv(&rt(RuntimeKind::Charliecloud), 7), None);
    }

    fn fake_programs(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in names {
            let p = dir.path().join(n);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        dir
    }

    #[test]
    fn auto_finds_all_in_preference_order() {
        let dir = fake_programs(&["ch-run", "podman", "apptainer"]);
        let found = detect(RuntimeFlag::Auto, Some(dir.path().as_os_str()), |_| None)
            .expect("auto never fails");
        let names: Vec<&str> = found.iter().map(|r| r.kind.name()).collect();
        assert_eq!(names, vec!["apptainer", "podman", "charliecloud"]);
        assert_eq!(found[0].program, dir.path().join("apptainer"));
        let none = detect(RuntimeFlag::None, Some(dir.path().as_os_str()), |_| None);
        assert_eq!(none, Ok(Vec::new()));
    }

    #[test]
    fn docker_needs_its_socket() {
        let dir = fake_programs(&["docker"]);
        let path = Some(dir.path().as_os_str());
        let missing = "unix:///nonexistent/scalable/docker.sock".to_string();
        let found = detect(RuntimeFlag::Auto, path, |k| {
            (k == "DOCKER_HOST").then(|| missing.clone())
        })
        .expect("auto");
        assert!(
            found.is_empty(),
            "a client without a daemon is not a runtime"
        );
        let err = detect(RuntimeFlag::Only(RuntimeKind::Docker), path, |k| {
            (k == "DOCKER_HOST").then(|| missing.clone())
        })
        .expect_err("explicit docker without a daemon");
        assert!(err.contains("/nonexistent/scalable/docker.sock"), "{err}");
        let sock = dir.path().join("docker.sock");
        std::fs::write(&sock, "").expect("stand-in socket");
        let host = format!("unix://{}", sock.display());
        let found = detect(RuntimeFlag::Only(RuntimeKind::Docker), path, |k| {
            (k == "DOCKER_HOST").then(|| host.clone())
        })
        .expect("docker with its socket");
        assert_eq!(found[0].env, vec![("DOCKER_HOST".to_string(), host)]);
    }

    #[test]
    fn explicit_runtime_missing_says_so() {
        let dir = fake_programs(&[]);
        let err = detect(
            RuntimeFlag::Only(RuntimeKind::Podman),
            Some(dir.path().as_os_str()),
            |_| None,
        )
        .expect_err("not found");
        assert_eq!(err, "podman not found on PATH");
    }

    #[test]
    fn flag_parsing() {
        assert_eq!("auto".parse(), Ok(RuntimeFlag::Auto));
        assert_eq!("none".parse(), Ok(RuntimeFlag::None));
        assert_eq!(
            "charliecloud".parse(),
            Ok(RuntimeFlag::Only(RuntimeKind::Charliecloud))
        );
        assert!("rkt".parse::<RuntimeFlag>().is_err());
    }
}
