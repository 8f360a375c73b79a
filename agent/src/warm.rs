//! Warm Python interpreters: `scalable-agent warm-exec -- PY -m scalable._worker ARGS`.
//!
//! Owns: the trampoline a warm task runs as (its leader process), finding or
//! starting the agent's Python zygote (`python -m scalable._zygote`), handing it
//! the task (argv, environment, cwd and stdio), and ending with the forked
//! child's exit status. Must not touch the executor's state: to the agent a
//! warm task is an ordinary child, spawned, limited, killed and reaped like any
//! other, so nothing of the spawn path changes.
//!
//! # Why a trampoline, not a second spawn path in the agent
//!
//! The child the zygote forks puts itself into the trampoline's process group
//! (same session: the zygote descends from the agent), takes the trampoline's
//! cpu affinity and cgroup, and its stdio. So every kill the agent sends to the
//! task's group (cancel, walltime, the memory watchdog, the orphan guard after
//! a SIGKILLed agent) reaches it, its memory counts for the task (sampling by
//! group, or the task's cgroup), and the agent reaps the trampoline as it reaps
//! any task. What a task costs is one exec of this binary (a few ms) and a fork
//! of a Python that has its imports done, instead of an interpreter's start.
//!
//! # Opting in, and falling back
//!
//! A task is warm only when its command is `@scalable-agent warm-exec -- PY -m
//! scalable._worker ...` (the Python client writes that; [`SELF_PROGRAM`] is
//! resolved by the agent to its own binary). Anything else after `--`, or
//! `SCALABLE_WARM=0`, or a zygote that cannot start, refuses the task or closes
//! before the child started: the argv after `--` is exec'd as it is (cold), so
//! the task runs, never fails for want of a zygote. A zygote that dies after
//! the child started cannot tell its status: the task ends with [`LOST_CODE`].
//!
//! One zygote per agent and interpreter environment (the interpreter and
//! `PYTHONPATH`), listening on `$TMPDIR/scalable-warm-UID/AGENTPID-KEY.sock`
//! (a directory only this user can enter). It is started on the first warm task,
//! detached by a double fork (re-parented to the agent, its own process group,
//! no `SCALABLE_*` variables, so it is no task's escapee) and exits when the
//! agent is gone.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The argument that turns `scalable-agent` into the trampoline.
pub const WARM_ARG: &str = "warm-exec";
/// A task's `argv[0]` that the agent runs as its own binary (`/proc/self/exe`).
pub const SELF_PROGRAM: &str = "@scalable-agent";
/// The module the zygote runs in its children; any other command runs cold.
pub const WORKER_MODULE: &str = "scalable._worker";
/// Exit code of a warm task whose zygote died after the child started: its
/// status is unknown (EX_TEMPFAIL; `retries` apply).
pub const LOST_CODE: i32 = 75;
/// The variable that turns warm tasks off on an agent (`0`).
pub const WARM_ENV: &str = "SCALABLE_WARM";
/// How long a task waits for a starting zygote (its imports, on a busy host),
/// and for a running one to say the child started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request the zygote accepts (its reader's cap; a bigger one runs cold).
const REQUEST_MAX: usize = 1 << 20;

/// The program to spawn for a task's `argv[0]`: the agent itself for
/// [`SELF_PROGRAM`]. `/proc/self/exe` resolves in the spawned child, which is
/// still the agent's image then, so a rebuilt binary on disk does not matter.
pub fn program(argv0: &str) -> &OsStr {
    if argv0 == SELF_PROGRAM {
        OsStr::new("/proc/self/exe")
    } else {
        OsStr::new(argv0)
    }
}

/// Why a task runs cold instead (said on its stderr).
struct Cold(String);

/// `scalable-agent warm-exec [--] PY -m scalable._worker ARGS...`: never returns.
pub fn run_trampoline() -> ! {
    let mut argv: Vec<OsString> = std::env::args_os().skip(2).collect();
    if argv.first().is_some_and(|a| a == "--") {
        argv.remove(0);
    }
    if argv.is_empty() {
        eprintln!("scalable-agent warm-exec: no command; usage: scalable-agent warm-exec -- PY -m {WORKER_MODULE} ARGS");
        std::process::exit(2);
    }
    let warm = argv.len() >= 3 && argv[1] == "-m" && argv[2] == WORKER_MODULE;
    if !warm || std::env::var_os(WARM_ENV).is_some_and(|v| v == "0") {
        exec_cold(&argv);
    }
    match run_warm(&argv) {
        Ok(status) => mirror(status),
        Err(Cold(why)) => {
            eprintln!("scalable-agent warm-exec: {why}; running the task cold");
            exec_cold(&argv)
        }
    }
}

/// The task's own command, as the agent would have run it.
fn exec_cold(argv: &[OsString]) -> ! {
    let err = Command::new(&argv[0]).args(&argv[1..]).exec();
    eprintln!(
        "scalable-agent warm-exec: cannot run {}: {err}",
        argv[0].to_string_lossy()
    );
    std::process::exit(127);
}

/// Ends this process as the child ended: its exit code, or its signal.
fn mirror(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising a signal at ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Hands the task to the zygote and waits for the child's wait status.
fn run_warm(argv: &[OsString]) -> Result<i32, Cold> {
    // SAFETY: getppid and getuid cannot fail.
    let (agent, uid) = unsafe { (libc::getppid(), libc::getuid()) };
    let sock = socket_path(uid, agent, &argv[0])?;
    let stream = match UnixStream::connect(&sock) {
        Ok(s) => s,
        Err(_) => start_zygote(&sock, &argv[0], agent)?,
    };
    let request = encode_request(&argv[3..])?;
    send_with_stdio(&stream, &request).map_err(|e| Cold(format!("zygote request: {e}")))?;
    // A zygote that does not answer in time loses the task to the cold path;
    // a child it forks later finds this end closed (exec closes it) and
    // does not run the call.
    let _ = stream.set_read_timeout(Some(START_TIMEOUT));
    let mut replies = BufReader::new(stream);
    let started = read_line(&mut replies);
    let _ = replies.get_ref().set_read_timeout(None);
    match started {
        Some(line) if line.starts_with("P ") => {}
        Some(line) if line.starts_with("E ") => {
            return Err(Cold(format!("zygote: {}", &line[2..])))
        }
        _ => return Err(Cold("the zygote closed before the task started".into())),
    }
    match read_line(&mut replies).and_then(|l| l.strip_prefix("X ")?.parse().ok()) {
        Some(status) => Ok(status),
        None => {
            eprintln!("scalable-agent warm-exec: the zygote died while the task ran; its status is unknown");
            std::process::exit(LOST_CODE);
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(n) if n > 0 && line.ends_with('\n') => Some(line.trim_end().to_string()),
        _ => None,
    }
}

/// `$TMPDIR/scalable-warm-UID/AGENTPID-KEY.sock`; the directory is made
/// private and refused if someone else owns it or can enter it.
fn socket_path(uid: u32, agent: i32, python: &OsStr) -> Result<PathBuf, Cold> {
    let dir = std::env::temp_dir().join(format!("scalable-warm-{uid}"));
    let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    if let Err(e) = made {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Cold(format!("{}: {e}", dir.display())));
        }
    }
    let meta =
        std::fs::symlink_metadata(&dir).map_err(|e| Cold(format!("{}: {e}", dir.display())))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(Cold(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(dir.join(format!("{agent}-{:016x}.sock", env_key(python))))
}

/// Which zygote serves a task: what decides the modules its imports find.
fn env_key(python: &OsStr) -> u64 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let path = std::env::var_os("PYTHONPATH").unwrap_or_default();
    let home = std::env::var_os("PYTHONHOME").unwrap_or_default();
    for part in [python, &path, &home] {
        for &b in part.as_bytes().iter().chain([0u8].iter()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The request: `u32` length, then NUL-separated fields: the trampoline's pid,
/// its cwd, the worker's argument count and arguments, then `KEY=VALUE` pairs.
fn encode_request(args: &[OsString]) -> Result<Vec<u8>, Cold> {
    let cwd = std::env::current_dir().map_err(|e| Cold(format!("cwd: {e}")))?;
    let mut body = Vec::new();
    let mut field = |b: &[u8]| {
        body.extend_from_slice(b);
        body.push(0);
    };
    field(std::process::id().to_string().as_bytes());
    field(cwd.as_os_str().as_bytes());
    field(args.len().to_string().as_bytes());
    for a in args {
        field(a.as_bytes());
    }
    for (k, v) in std::env::vars_os() {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        field(&kv);
    }
    if body.len() > REQUEST_MAX || body.iter().filter(|&&b| b == 0).count() < 3 {
        return Err(Cold(format!(
            "request of {} bytes is over the zygote's cap",
            body.len()
        )));
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Sends the request, with this process's stdin, stdout and stderr attached
/// (`SCM_RIGHTS`) to the first bytes.
fn send_with_stdio(stream: &UnixStream, request: &[u8]) -> std::io::Result<()> {
    let fds: [libc::c_int; 3] = [0, 1, 2];
    let fd_bytes = std::mem::size_of_val(&fds) as u32;
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: request.as_ptr() as *mut libc::c_void,
        iov_len: request.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header of CMSG_SPACE(fd_bytes).
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr() as *const u8,
            libc::CMSG_DATA(cmsg),
            fd_bytes as usize,
        );
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    (&*stream).write_all(&request[sent as usize..])
}

/// Starts the zygote for `sock` (one starter at a time, under a lock file) and
/// connects to it. `Cold` when it cannot start or says nothing in time.
fn start_zygote(sock: &Path, python: &OsStr, agent: i32) -> Result<UnixStream, Cold> {
    let lock_path = sock.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Cold(format!("{}: {e}", lock_path.display())))?;
    // SAFETY: flock on an fd we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Cold(format!(
            "{}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        )));
    }
    if let Ok(s) = UnixStream::connect(sock) {
        return Ok(s); // another task started it while we waited for the lock
    }
    let _ = std::fs::remove_file(sock);
    let ready = spawn_detached(sock, python, agent)?;
    wait_ready(ready, sock)?;
    UnixStream::connect(sock).map_err(|e| Cold(format!("zygote {}: {e}", sock.display())))
}

/// The zygote, through a double fork: the middle process exits at once, so
/// the zygote is re-parented to the agent (a child subreaper) and belongs to
/// no task. Returns the read end of the pipe it says `ready` on.
fn spawn_detached(sock: &Path, python: &OsStr, agent: i32) -> Result<OwnedFd, Cold> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Cold(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: both fds were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let log = std::fs::File::create(sock.with_extension("log"))
        .map(Stdio::from)
        .unwrap_or(Stdio::null());
    let mut cmd = Command::new(python);
    cmd.args(["-m", "scalable._zygote"])
        .arg(sock)
        .arg(agent.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(log)
        .current_dir("/")
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"SCALABLE_") {
            cmd.env_remove(k);
        }
    }
    // SAFETY: this process is single-threaded, so the middle child may allocate.
    match unsafe { libc::fork() } {
        -1 => Err(Cold(format!("fork: {}", std::io::Error::last_os_error()))),
        0 => {
            let code = i32::from(cmd.spawn().is_err());
            // SAFETY: the middle process leaves without running destructors.
            unsafe { libc::_exit(code) }
        }
        middle => {
            drop(cmd); // our copy of the pipe's write end: EOF once the zygote closes it
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(middle, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(read_end)
            } else {
                Err(Cold(format!("cannot start {}", python.to_string_lossy())))
            }
        }
    }
}

/// Waits until the zygote says `ready` (it listens then) or closes its pipe.
fn wait_ready(ready: OwnedFd, sock: &Path) -> Result<(), Cold> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pipe = std::fs::File::from(ready);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n == 0 {
            return Err(Cold(format!(
                "the zygote did not start within {START_TIMEOUT:?}"
            )));
        }
        let mut buf = [0u8; 64];
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => {
                return Err(Cold(format!(
                    "the zygote exited at its start (see {})",
                    sock.with_extension("log").display()
                )))
            }
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
        if got.ends_with(b"ready\n") {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marker_names_the_agent() {
        assert_eq!(program(SELF_PROGRAM), OsStr::new("/proc/self/exe"));
        assert_eq!(program("python3"), OsStr::new("python3"));
        assert_eq!(program("scalable-agent"), OsStr::new("scalable-agent"));
    }

    #[test]
    fn the_key_depends_on_the_interpreter() {
        assert_ne!(
            env_key(OsStr::new("/usr/bin/python3")),
            env_key(OsStr::new("/opt/py/bin/python3"))
        );
        assert_eq!(
            env_key(OsStr::new("/usr/bin/python3")),
            env_key(OsStr::new("/usr/bin/python3"))
        );
    }

    #[test]
    fn a_request_carries_args_then_env() {
        let req = encode_request(&[OsString::from("f1.in"), OsString::from("f1.out")])
            .unwrap_or_default();
        let len = u32::from_be_bytes([req[0], req[1], req[2], req[3]]) as usize;
        assert_eq!(len, req.len() - 4);
        let fields: Vec<&[u8]> = req[4..].split(|&b| b == 0).collect();
        assert_eq!(fields[0], std::process::id().to_string().as_bytes());
        assert_eq!(fields[2], b"2");
        assert_eq!(fields[3], b"f1.in");
        assert_eq!(fields[4], b"f1.out");
        assert!(fields[5..].iter().any(|f| f.starts_with(b"PATH=")));
    }
}
