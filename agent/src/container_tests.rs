//! Real container runs through the executor: podman and the Docker engine.
//!
//! These need `scripts/container-testbed.sh start` (podman with runc and its
//! containers.conf drop-in, dockerd on a private socket, the image
//! `localhost/busybox:local`). They fail, never skip, when that is missing: a
//! silently skipped container test is a container feature nobody tested.

use std::path::Path;
use std::time::{Duration, Instant};

use scalable_common::protocol::{Assignment, AttemptEnd, AttemptId, AttemptResult, ContainerSpec};
use scalable_common::resources::Resources;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::executor::{ExecConfig, ExecEvent, Executor};
use crate::runtime::{self, Runtime, RuntimeFlag, RuntimeKind};

const IMAGE: &str = "localhost/busybox:local";
const DOCKER_HOST_DEFAULT: &str = "unix:///tmp/scalable-docker/docker.sock";
const HINT: &str = "run scripts/container-testbed.sh start (the CI script .ci/run does)";
/// A container start takes 0.3-0.5 s here; generous for a loaded machine.
const EVENT_WAIT_MAX: Duration = Duration::from_secs(60);

fn runtime_or_fail(kind: RuntimeKind) -> Runtime {
    let docker_host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| DOCKER_HOST_DEFAULT.to_string());
    let path = std::env::var_os("PATH");
    match runtime::detect(RuntimeFlag::Only(kind), path.as_deref(), |k| {
        (k == "DOCKER_HOST").then(|| docker_host.clone())
    }) {
        Ok(mut found) if !found.is_empty() => found.remove(0),
        Ok(_) => panic!("{} is not usable: {HINT}", kind.name()),
        Err(e) => panic!("{e}: {HINT}"),
    }
}

struct Env {
    exec: Executor,
    rx: UnboundedReceiver<ExecEvent>,
    _logs: tempfile::TempDir,
}

fn env(rt: Option<Runtime>) -> Env {
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cfg = ExecConfig::new(logs.path());
    cfg.kill_grace = Duration::from_millis(500);
    cfg.runtime = rt;
    let (tx, rx) = unbounded_channel();
    Env {
        exec: Executor::new(cfg, tx).expect("executor"),
        rx,
        _logs: logs,
    }
}

impl Env {
    fn run(&mut self, a: &Assignment) -> AttemptResult {
        self.exec.start(a);
        let until = Instant::now() + EVENT_WAIT_MAX;
        loop {
            match self.rx.try_recv() {
                Ok(ExecEvent::Finished(r)) if r.attempt == a.attempt => return r,
                Ok(_) => {}
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no result within {EVENT_WAIT_MAX:?}: {e}"),
            }
        }
    }
}

/// Attempt ids name containers (`scalable-<id>`) host-wide: unique per test process.
fn attempt_id(n: u64) -> AttemptId {
    u64::from(std::process::id()) * 1000 + n
}

fn task(attempt: AttemptId, cwd: &Path, argv: &[&str], spec: Option<ContainerSpec>) -> Assignment {
    Assignment {
        attempt,
        task: attempt,
        run: 1,
        attempt_number: 1,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("FROM_TASK".into(), "task-env".into())],
        cwd: cwd.to_string_lossy().into_owned(),
        resources: Resources::cpus(1),
        walltime_ms: None,
        outputs: Vec::new(),
        container: spec,
        inputs: Vec::new(),
    }
}

fn busybox(data: &Path) -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.into(),
        mounts: vec![(data.to_string_lossy().into_owned(), "/data".into())],
        env: vec![("GREETING".into(), "hello".into())],
    }
}

/// The acceptance test: a task in a container reads and writes through a mount,
/// sees its env, runs in its cwd (mounted at the same path).
fn mount_round_trip(kind: RuntimeKind, n: u64) {
    let rt = runtime_or_fail(kind);
    let mut e = env(Some(rt));
    let data = tempfile::tempdir().expect("tempdir");
    let cwd = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        data.path().join("in.txt"),
        format!("input for {}\n", kind.name()),
    )
    .expect("write");
    let id = attempt_id(n);
    let mut a = task(
        id,
        cwd.path(),
        &[
            "sh",
            "-c",
            "cat /data/in.txt > /data/out.txt && echo $GREETING $FROM_TASK $SCALABLE_ATTEMPT_ID $(pwd) && echo made > local.txt",
        ],
        Some(busybox(data.path())),
    );
    a.outputs = vec!["local.txt".into()];
    let r = e.run(&a);
    assert_eq!(
        r.end,
        AttemptEnd::Exited { code: 0 },
        "{}: {r:?}\nstderr: {}\n(hint: {HINT})",
        kind.name(),
        String::from_utf8_lossy(&r.stderr_tail)
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).expect("out.txt on the host"),
        format!("input for {}\n", kind.name())
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout_tail),
        format!("hello task-env {id} {}\n", cwd.path().display())
    );
    assert!(
        cwd.path().join("local.txt").exists(),
        "relative paths resolve in the cwd"
    );
}

/// A container over its memory limit (`--memory` = request × margin) is
/// MEMORY_EXHAUSTION; the runtime's cgroup kills it, the client exits 137.
fn memory_limit(kind: RuntimeKind, n: u64) {
    let rt = runtime_or_fail(kind);
    let mut e = env(Some(rt));
    let cwd = tempfile::tempdir().expect("tempdir");
    let spec = ContainerSpec {
        image: IMAGE.into(),
        mounts: vec![],
        env: vec![],
    };
    let mut a = task(
        attempt_id(n),
        cwd.path(),
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1"],
        Some(spec),
    );
    a.resources.memory_bytes = 100 << 20;
    let r = e.run(&a);
    assert_eq!(r.end, AttemptEnd::OutOfMemory, "{}: {r:?}", kind.name());
}

/// Walltime stops the container too, not only the client: `sleep` as the
/// container's pid 1 ignores the SIGTERM the client forwards, and a SIGKILLed
/// client leaves its container running; `<runtime> stop` ends it.
fn walltime_stops_the_container(kind: RuntimeKind, n: u64) {
    let rt = runtime_or_fail(kind);
    let program = rt.program.to_string_lossy().into_owned();
    let rt_env = rt.env.clone();
    let mut e = env(Some(rt));
    let cwd = tempfile::tempdir().expect("tempdir");
    let spec = ContainerSpec {
        image: IMAGE.into(),
        mounts: vec![],
        env: vec![],
    };
    let id = attempt_id(n);
    let mut a = task(id, cwd.path(), &["sleep", "100"], Some(spec));
    a.walltime_ms = Some(1500);
    let t0 = Instant::now();
    let r = e.run(&a);
    assert_eq!(r.end, AttemptEnd::TimedOut, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // Ask the runtime, through the executor (the reaper owns every child).
    let name = runtime::container_name(id);
    let until = Instant::now() + Duration::from_secs(30);
    let mut check = 0;
    loop {
        check += 1;
        let mut ps = task(
            attempt_id(n + 100 + check),
            cwd.path(),
            &[
                &program,
                "ps",
                "-a",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Names}}",
            ],
            None,
        );
        ps.env = rt_env.clone();
        let r = e.run(&ps);
        assert_eq!(r.end, AttemptEnd::Exited { code: 0 }, "{r:?}");
        let listed = String::from_utf8_lossy(&r.stdout_tail).into_owned();
        if !listed.lines().any(|l| l.trim() == name) {
            break;
        }
        assert!(Instant::now() < until, "{name} still exists: {listed}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn podman_task_reads_and_writes_through_a_mount() {
    mount_round_trip(RuntimeKind::Podman, 1);
}

#[test]
fn docker_task_reads_and_writes_through_a_mount() {
    mount_round_trip(RuntimeKind::Docker, 2);
}

#[test]
fn podman_memory_limit_is_memory_exhaustion() {
    memory_limit(RuntimeKind::Podman, 3);
}

#[test]
fn docker_memory_limit_is_memory_exhaustion() {
    memory_limit(RuntimeKind::Docker, 4);
}

#[test]
fn podman_walltime_stops_the_container() {
    walltime_stops_the_container(RuntimeKind::Podman, 10);
}

#[test]
fn docker_walltime_stops_the_container() {
    walltime_stops_the_container(RuntimeKind::Docker, 30);
}
