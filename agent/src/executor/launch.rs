//! The launcher: one task's process started with a raw
//! `clone(CLONE_VM | CLONE_VFORK)`, the child setting itself up before `execve`.
//!
//! Owns: [`Launch`] (a finished description of the child: program, argv,
//! environment, cwd, stdio, cores) and [`Launch::start`]. It must not decide
//! anything about the task (that is `command` and `spawn`) and the child side
//! must not allocate, lock or touch anything but its own stack and the
//! [`Launch`] it was given: it shares the agent's memory until `execve`.
//!
//! # Why not `std::process::Command`
//!
//! std's spawn (glibc `posix_spawn`, also `CLONE_VM | CLONE_VFORK`) cannot bind
//! the child to its cores, so the agent narrowed its *own* thread's affinity
//! around every spawn. Under `perf sched` (issue 15) that was the largest loss
//! of the spawn bench: when `posix_spawn` returns, the agent's thread is still
//! narrowed to the new task's core, where the task now runs, so it waited up to
//! a whole task (~1 ms here) for that core while the other core sat idle (15%
//! idle against xargs' 7%). Here the child binds itself between `clone` and
//! `execve` (as a `pre_exec` hook would, without std's fork fallback), and the
//! agent's threads never change their affinity. It also drops std's per-spawn
//! work: the environment map (the agent's environment is read once, see
//! [`base_environment`]), glibc's per-spawn stack `mmap`/`munmap` (one stack per
//! spawning thread, kept).
//!
//! # The child's steps, and the signal rule
//!
//! The parent blocks every signal around the `clone`, so no handler of the
//! agent's can run in the child while it shares the agent's memory. The child
//! then resets every caught signal to its default (what glibc's `posix_spawn`
//! does) and `SIGPIPE` too (std ignores it in the agent, a task expects the
//! default), joins a new process group, binds itself to its cores, takes its
//! stdio, changes directory, unblocks every signal and `execve`s each candidate
//! path in turn (a `PATH` search as `execvp` does, with its fallback: a file
//! that is not in an executable format, a script without `#!`, is run by
//! `/bin/sh`, as by the old `Command` path and every shell). A failing step writes its
//! errno into the [`Launch`] and `_exit(127)`s; the parent reaps that child and
//! returns the error.

use std::cell::RefCell;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// The child's stack. Its steps are a few raw system calls; glibc's own
/// `posix_spawn` child is given 32 KiB plus the argv's size.
const CHILD_STACK_BYTES: usize = 64 * 1024;
/// What runs a script without `#!` (`execvp`'s fallback).
const SHELL: &std::ffi::CStr = c"/bin/sh";
/// Highest signal number (glibc's `_NSIG - 1` on Linux).
const SIGNAL_MAX: libc::c_int = 64;

/// A child process to start: everything the child side needs, prebuilt as C
/// strings and pointer arrays so it only reads.
pub(super) struct Launch {
    /// Full paths to `execve` in order (one unless `PATH` is searched).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    stdio: [RawFd; 3],
    cpus: Option<libc::cpu_set_t>,
}

impl Launch {
    /// The child `program` with `args` (its `argv[0]` is `program` as given),
    /// stdio from these descriptors (kept open by the caller until `start`
    /// returns), the agent's environment less `remove`, with `env` set over it
    /// (a later pair wins), and `cwd` if given. `None` with the reason if a
    /// string holds a NUL byte.
    pub(super) fn new(
        program: &OsStr,
        args: &[String],
        stdio: [RawFd; 3],
        env: &[(&str, &OsStr)],
        remove: &[&str],
        cwd: Option<&Path>,
    ) -> Result<Launch, String> {
        let c =
            |s: &[u8], what: &str| CString::new(s).map_err(|_| format!("{what} holds a NUL byte"));
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(c(program.as_bytes(), "the program")?);
        for a in args {
            argv.push(c(a.as_bytes(), "an argument")?);
        }
        let envp = environment(env, remove).ok_or("an environment variable holds a NUL byte")?;
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| *k == "PATH")
            .map(|(_, v)| v.as_bytes())
            .or_else(|| base_path().map(|p| p.as_bytes()));
        let candidates = candidates(program.as_bytes(), path_var)?;
        let cwd = cwd
            .map(|p| c(p.as_os_str().as_bytes(), "the working directory"))
            .transpose()?;
        Ok(Launch {
            candidates,
            argv,
            envp,
            cwd,
            stdio,
            cpus: None,
        })
    }

    /// Binds the child to `cpus` from before its `execve`.
    pub(super) fn bind(&mut self, cpus: &[usize]) {
        // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            if cpu < libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` is within the set's size, checked above.
                unsafe { libc::CPU_SET(cpu, &mut set) };
            }
        }
        self.cpus = Some(set);
    }

    /// Starts the child; its pid once it runs the program (or the error of the
    /// step that failed, the child then reaped). Must be called with no lock held
    /// that a signal-free child could need (it needs none).
    pub(super) fn start(&self) -> io::Result<libc::pid_t> {
        let argv = pointers(&self.argv);
        let envp = pointers(&self.envp);
        let paths = pointers(&self.candidates);
        // `/bin/sh PATH ARGS...` for a script without `#!`: the child writes the
        // candidate's path into slot 1 (it may write nothing else).
        let mut sh_argv = Vec::with_capacity(argv.len() + 1);
        sh_argv.extend([SHELL.as_ptr(), std::ptr::null()]);
        sh_argv.extend_from_slice(&argv[1..]);
        let child = Child {
            paths: paths.as_ptr(),
            argv: argv.as_ptr(),
            sh_argv: sh_argv.as_mut_ptr(),
            envp: envp.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: self.stdio,
            cpus: self
                .cpus
                .as_ref()
                .map_or(std::ptr::null(), |s| s as *const _),
            error: AtomicI32::new(0),
        };
        let pid = STACK.with(|stack| -> io::Result<libc::pid_t> {
            let mut stack = stack.borrow_mut();
            let top = stack.top()?;
            let mut all: libc::sigset_t = unsafe_zeroed();
            let mut old: libc::sigset_t = unsafe_zeroed();
            // SAFETY: valid sigset pointers; blocking every signal in this thread
            // only, restored below. `clone` gets a stack nobody else uses (this
            // thread's, borrowed mutably) and a `Child` that outlives the call:
            // with CLONE_VFORK this thread is suspended until the child execs or
            // exits, so the borrowed memory is not touched concurrently.
            unsafe {
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
                let pid = libc::clone(
                    child_main,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    &child as *const Child as *mut libc::c_void,
                );
                let clone_error = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                if pid < 0 {
                    return Err(clone_error);
                }
                Ok(pid)
            }
        })?;
        match child.error.load(Ordering::Acquire) {
            0 => Ok(pid),
            errno => {
                // The child `_exit`ed: reap it here, before the spawn's reaper
                // ticket ends (the reaper waits for the ticket, then finds nothing).
                let mut status = 0;
                // SAFETY: `pid` is our exited child; `status` is writable.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// What the child reads (raw pointers into the [`Launch`] and the parent's
/// pointer arrays, valid while the parent is suspended) and the one thing it
/// writes: the errno of the step that failed.
struct Child {
    paths: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    /// The shell's argv, slot 1 left for the script's path.
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    cpus: *const libc::cpu_set_t,
    error: AtomicI32,
}

/// The child side (see the module doc). Only async-signal-safe system calls;
/// never returns to the caller's code.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Child`, alive while the parent is suspended.
    let c = unsafe { &*(arg as *const Child) };
    // SAFETY: each call is a plain system call on valid pointers from `Child`.
    unsafe {
        let fail = |c: &Child| -> ! {
            let errno = *libc::__errno_location();
            c.error.store(errno.max(1), Ordering::Release);
            libc::_exit(127)
        };
        let mut action: libc::sigaction = std::mem::zeroed();
        for sig in 1..=SIGNAL_MAX {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(sig, std::ptr::null(), &mut action) != 0 {
                continue; // glibc's internal signals: not ours to reset
            }
            let h = action.sa_sigaction;
            let caught = h != libc::SIG_DFL && h != libc::SIG_IGN;
            if caught || (sig == libc::SIGPIPE && h == libc::SIG_IGN) {
                action.sa_sigaction = libc::SIG_DFL;
                action.sa_flags = 0;
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(c);
        }
        // A task that cannot be bound runs unbound (the old path's rule).
        if !c.cpus.is_null() {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), c.cpus);
        }
        for (target, &fd) in c.stdio.iter().enumerate() {
            let target = target as RawFd;
            let ok = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !ok {
                fail(c);
            }
        }
        if !c.cwd.is_null() && libc::chdir(c.cwd) != 0 {
            fail(c);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut denied = 0;
        let mut p = c.paths;
        while !(*p).is_null() {
            libc::execve(*p, c.argv, c.envp);
            match *libc::__errno_location() {
                libc::ENOEXEC => {
                    *c.sh_argv.add(1) = *p;
                    libc::execve(SHELL.as_ptr(), c.sh_argv, c.envp);
                    fail(c)
                }
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE => {}
                libc::EACCES => denied = libc::EACCES,
                _ => fail(c),
            }
            p = p.add(1);
        }
        if denied != 0 {
            *libc::__errno_location() = denied;
        }
        fail(c)
    }
}

/// The paths to try for `program`: itself if it names a path (holds a `/`),
/// else each directory of `PATH` joined with it, in order (an empty entry is the
/// working directory, as `execvp` has it).
fn candidates(program: &[u8], path_var: Option<&[u8]>) -> Result<Vec<CString>, String> {
    let nul = |_| "the program holds a NUL byte".to_string();
    if program.is_empty() {
        return Err("empty program name".into());
    }
    if program.contains(&b'/') {
        return Ok(vec![CString::new(program).map_err(nul)?]);
    }
    let path_var = path_var.unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    let mut out = Vec::new();
    for dir in path_var.split(|&b| b == b':') {
        let mut full = Vec::with_capacity(dir.len() + program.len() + 1);
        if !dir.is_empty() {
            full.extend_from_slice(dir);
            full.push(b'/');
        }
        full.extend_from_slice(program);
        out.push(CString::new(full).map_err(nul)?);
    }
    Ok(out)
}

/// The environment: the agent's (read once) less `remove` and less every name
/// `env` sets, then `env`'s pairs (the last of a repeated name wins).
fn environment(env: &[(&str, &OsStr)], remove: &[&str]) -> Option<Vec<CString>> {
    let set = |name: &[u8]| env.iter().any(|(k, _)| k.as_bytes() == name);
    let mut out: Vec<CString> = base_environment()
        .iter()
        .filter(|(name, _)| !set(name) && !remove.iter().any(|r| r.as_bytes() == name.as_slice()))
        .map(|(_, pair)| pair.clone())
        .collect();
    for (i, (k, v)) in env.iter().enumerate() {
        if env[i + 1..].iter().any(|(later, _)| later == k) {
            continue; // a later pair sets it
        }
        let mut pair = Vec::with_capacity(k.len() + v.len() + 1);
        pair.extend_from_slice(k.as_bytes());
        pair.push(b'=');
        pair.extend_from_slice(v.as_bytes());
        out.push(CString::new(pair).ok()?);
    }
    Some(out)
}

/// The agent's own environment as `NAME=value` C strings, read at the first
/// spawn. Why once: the agent changes its environment only at start (the
/// credentials' scrub, before any thread or task); reading it per spawn was
/// part of the ~10% of the agent's cpu std's `Command` spent (issue 15).
fn base_environment() -> &'static [(Vec<u8>, CString)] {
    static BASE: OnceLock<Vec<(Vec<u8>, CString)>> = OnceLock::new();
    BASE.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let name = k.into_vec();
                let mut pair = name.clone();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                Some((name, CString::new(pair).ok()?))
            })
            .collect()
    })
}

/// The agent's `PATH`, for the search of a program named without a `/`.
fn base_path() -> Option<&'static OsString> {
    static PATH: OnceLock<Option<OsString>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("PATH")).as_ref()
}

/// A null-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut v: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    v.push(std::ptr::null());
    v
}

fn unsafe_zeroed<T: Copy>() -> T {
    // SAFETY: used only for libc's plain-data types (sigset_t), valid when zeroed.
    unsafe { std::mem::zeroed() }
}

thread_local! {
    /// Each spawning thread's child stack, mapped at its first spawn and kept.
    static STACK: RefCell<ChildStack> = const { RefCell::new(ChildStack { base: std::ptr::null_mut() }) };
}

/// A child stack with a guard page below it (an overflow faults instead of
/// writing over the agent's memory).
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    /// The stack's top (it grows down), 16-byte aligned; maps it the first time.
    fn top(&mut self) -> io::Result<*mut libc::c_void> {
        let page = 4096;
        if self.base.is_null() {
            // SAFETY: an anonymous private mapping; checked below.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    CHILD_STACK_BYTES + page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the lowest page of the mapping just made.
            unsafe { libc::mprotect(base, page, libc::PROT_NONE) };
            self.base = base;
        }
        // SAFETY: within the mapping (one past its end is the initial top).
        Ok(unsafe { self.base.cast::<u8>().add(CHILD_STACK_BYTES + page) }.cast())
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        if !self.base.is_null() {
            // SAFETY: the mapping made in `top`, no longer used (its thread ends).
            unsafe { libc::munmap(self.base, CHILD_STACK_BYTES + 4096) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_tries_each_directory_in_order() {
        let c = candidates(b"true", Some(b"/a:/b/c::/d")).expect("candidates");
        let c: Vec<&[u8]> = c.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(c, [&b"/a/true"[..], b"/b/c/true", b"true", b"/d/true"]);
        let c = candidates(b"./run.sh", Some(b"/a")).expect("candidates");
        assert_eq!(c[0].as_bytes(), b"./run.sh");
        assert!(candidates(b"", None).is_err());
        assert!(candidates(b"a\0b", None).is_err());
    }

    #[test]
    fn environment_sets_over_the_agents_and_removes_what_it_must() {
        let home = std::env::var_os("HOME").is_some();
        let env = [
            ("X_SCALABLE_T", OsStr::new("1")),
            ("X_SCALABLE_T", OsStr::new("2")),
        ];
        let out = environment(&env, &["HOME"]).expect("env");
        let pairs: Vec<&[u8]> = out.iter().map(|s| s.as_bytes()).collect();
        assert!(
            pairs.contains(&&b"X_SCALABLE_T=2"[..]),
            "the last pair wins"
        );
        assert!(!pairs.contains(&&b"X_SCALABLE_T=1"[..]));
        assert!(!pairs.iter().any(|p| p.starts_with(b"HOME=")), "removed");
        if home {
            assert!(out.len() < base_environment().len() + 1);
        }
        assert!(environment(&[("A", OsStr::new("a\0b"))], &[]).is_none());
    }
}
