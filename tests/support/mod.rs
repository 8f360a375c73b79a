//! Helpers that start real processes: a broker, agents, the CLI.

pub mod processes;
pub mod staging;

use std::cell::Cell;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub use processes::{alive, dies, kill9, pid_in};

pub fn broker_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_scalable-broker"))
}

pub fn cli_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_scalable"))
}

/// Runs the tests' agents from this binary instead (e.g. the dist build:
/// `SCALABLE_AGENT_BIN=target/x86_64-unknown-linux-gnu/dist/scalable-agent`;
/// a relative path is taken from the workspace root).
pub const AGENT_BIN_ENV: &str = "SCALABLE_AGENT_BIN";

/// The agent binary: `$SCALABLE_AGENT_BIN`, else the one next to the broker
/// binary (another package's; scripts/test.sh builds it first). Every agent
/// of the suite starts from it, the brokers' local agents and pilots too.
pub fn agent_exe() -> PathBuf {
    if let Some(p) = std::env::var_os(AGENT_BIN_ENV).filter(|p| !p.is_empty()) {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(p);
        assert!(p.exists(), "{AGENT_BIN_ENV}={} is missing", p.display());
        return p;
    }
    let p = broker_exe().with_file_name("scalable-agent");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A running broker with its own state dir and work dir; killed on drop.
pub struct Broker {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub agents: Vec<Child>,
    /// The flags it was started with (a restart reuses them).
    pub args: Vec<String>,
    /// Held while the broker lives, so a [`solo`] test waits for it.
    _shared: Option<RwLockReadGuard<'static, ()>>,
}

/// Tests that assert on latency (`hostile`) run alone: every broker holds this
/// lock shared while it lives, [`solo`] takes it exclusively. Other tests of
/// the one integration binary run in parallel (4 threads), and on a 2-core
/// machine their load alone would decide a 1 s latency bar.
static SOLO: RwLock<()> = RwLock::new(());

thread_local! {
    /// This test thread holds [`SOLO`] exclusively (its own brokers must not
    /// wait for themselves).
    static SOLO_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs the rest of the calling test with no other broker alive.
pub struct Solo(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

pub fn solo() -> Solo {
    let guard = SOLO.write().unwrap_or_else(|e| e.into_inner());
    SOLO_HERE.with(|s| s.set(true));
    Solo(guard)
}

/// Held by a test that starts brokers of its own (not through [`Broker`],
/// e.g. from a shell script), so a [`solo`] test waits for it too.
pub fn shared_broker_guard() -> RwLockReadGuard<'static, ()> {
    SOLO.read().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Solo {
    fn drop(&mut self) {
        SOLO_HERE.with(|s| s.set(false));
    }
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Broker {
        Broker::start_env(extra, &[])
    }

    /// Starts a broker with extra flags and environment (e.g. fail points).
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let shared = if SOLO_HERE.with(|s| s.get()) {
            None
        } else {
            Some(SOLO.read().unwrap_or_else(|e| e.into_inner()))
        };
        let child = spawn_broker(dir.path(), "127.0.0.1:0", &args, &env);
        let b = Broker {
            child,
            dir,
            agents: Vec::new(),
            args,
            _shared: shared,
        };
        wait_until(Duration::from_secs(20), "access.json", || {
            b.access().exists()
        });
        b
    }

    /// The address agents and the CLI dial (from access.json).
    pub fn address(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.access()).unwrap()).unwrap();
        v["address"]
            .as_str()
            .expect("address in access.json")
            .to_string()
    }

    /// kill -9 of the broker only (agents keep running).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same state dir and port, with `env`
    /// instead of the first start's environment.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        let address = self.address();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.child = spawn_broker(self.dir.path(), &address, &self.args, &env);
        wait_until(Duration::from_secs(20), "the broker to answer", || {
            self.cli(&["status", "--json"]).status.success()
        });
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn access(&self) -> PathBuf {
        self.state().join("access.json")
    }

    pub fn token_file(&self) -> PathBuf {
        self.state().join("agent.token")
    }

    /// Where tasks run (the CLI's cwd).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Starts an agent with the broker's token file and extra flags.
    pub fn agent(&mut self, args: &[&str]) {
        self.agent_env(args, &[]);
    }

    /// Starts an agent with extra flags and environment variables.
    pub fn agent_env(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let n = self.agents.len();
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{n}.log"))).unwrap();
        let child = Command::new(agent_exe())
            .arg("--token-file")
            .arg(self.token_file())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start agent");
        self.agents.push(child);
    }

    /// Runs the CLI in the work dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("run scalable")
    }

    /// The CLI as a command in the work dir, for a caller that spawns it
    /// without waiting (several at once, or under a time limit).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_exe());
        cmd.arg("--access")
            .arg(self.access())
            .args(args)
            .current_dir(self.work());
        cmd
    }

    /// Runs the CLI and expects exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "scalable {args:?} failed with {:?}\nstdout: {}\nstderr: {}\nbroker log:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn wait_agents(&self, n: usize) {
        wait_until(Duration::from_secs(20), "agents to connect", || {
            let out = self.cli(&["agents", "--json"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .ok()
                    .and_then(|v| v.as_array().map(|a| a.len()))
                    .unwrap_or(0)
                    >= n
        });
    }

    /// Writes a workflow file into the work dir and returns its name.
    pub fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.work().join(name), text).unwrap();
        name.to_string()
    }

    /// Bytes of the broker's database files (with its WAL and shared memory).
    pub fn db_bytes(&self) -> u64 {
        std::fs::read_dir(self.state())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("broker.db"))
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Read-only view of the broker's database.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state().join("broker.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open broker.db")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        // SIGTERM first: the broker stops the local agents it started; SIGKILL
        // would leave them behind, retrying to connect.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(
    dir: &std::path::Path,
    listen: &str,
    args: &[String],
    env: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .unwrap();
    Command::new(broker_exe())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--listen", listen])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SCALABLE_AGENT_EXE", agent_exe())
        .env("SCALABLE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start broker")
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` until it exits or `limit` passes (then kills it): its output,
/// `None` if it was killed, and how long it ran.
pub fn run_within(mut cmd: Command, limit: Duration) -> (Option<Output>, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a command");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    // Reading both pipes while waiting needs a thread; the channel gives the limit.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (Some(out.expect("wait for a command")), start.elapsed()),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            (None, start.elapsed())
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `[AGENT]` for the agent binaries in `text`: the one the tests run and the
/// one next to the CLI (render's pick, which differs when `SCALABLE_AGENT_BIN`
/// runs the tests' agents from elsewhere, e.g. the dist build).
pub fn redact_agent(text: &str) -> String {
    let same_install = cli_exe().with_file_name("scalable-agent");
    text.replace(&agent_exe().display().to_string(), "[AGENT]")
        .replace(&same_install.display().to_string(), "[AGENT]")
}
