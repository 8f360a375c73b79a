//! The agent's own credentials stay the agent's: no task, container runtime
//! helper or orphan guard inherits or reads them.
//!
//! Owns: the list of variables that carry the agent's credentials
//! ([`CREDENTIAL_ENV`]), scrubbing them from the agent's own process at start
//! ([`scrub_process`]) and the token file's mode check ([`check_token_file`]).
//! It must not read the credentials for the agent (that is `main`) nor decide
//! anything about a task but which variables it must not see.
//!
//! # What the agent enforces, and what it cannot
//!
//! - After reading them, the agent removes `SCALABLE_TOKEN`,
//!   `SCALABLE_FINGERPRINT` and `SCALABLE_TOKEN_FILE` from its own environment
//!   before it starts any thread or child, so nothing it spawns inherits them;
//!   the executor also removes them from every task's environment (a library
//!   user that never called [`scrub_process`] is covered too). A task that sets
//!   one of them in its own `env:` keeps its value: that is the user's own.
//! - `/proc/<agent>/environ` and `/proc/<agent>/cmdline` show the environment
//!   and argv the agent was *started* with, whatever `unsetenv` does. So the
//!   token's bytes are overwritten in place in both (through `/proc/self/mem`),
//!   which also hides a `--token` flag from `ps` once the agent runs (before
//!   that moment `ps` can see it; prefer the file or the variable).
//! - The agent makes itself non-dumpable (`PR_SET_DUMPABLE` 0): processes of
//!   the same user (its tasks) cannot read its memory, its descriptors or its
//!   environment through `/proc`. Tasks are dumpable again after their `exec`,
//!   so the agent can still sample them. It costs the agent its core dumps.
//! - The token file: the agent warns when it is readable by group or others
//!   (the broker writes it 0600). A task runs as the agent's user, so it *can*
//!   read any file the agent can, the token file included, if it knows the path;
//!   the agent only stops handing it the path. Where tasks must not reach the
//!   token at all, deliver it as `SCALABLE_TOKEN` (as the rendered Kubernetes
//!   and Fargate pilots do) and keep no copy in a file the task can reach, or
//!   run tasks as another user.
//! - root is not bound by any of this (it reads `/proc/<pid>/mem` at will).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Variables that carry the agent's credentials, or where to find them. No task
/// gets them from the agent.
pub const CREDENTIAL_ENV: [&str; 3] = [
    "SCALABLE_TOKEN",
    "SCALABLE_FINGERPRINT",
    "SCALABLE_TOKEN_FILE",
];
/// Shorter secrets are not searched for in memory (they would match by chance).
const SECRET_BYTES_MIN: usize = 8;

/// Removes [`CREDENTIAL_ENV`] from this process's environment, overwrites each
/// of `secrets` (the token, the token file's path) in the argv and environment
/// `/proc` shows, and makes the process non-dumpable. Call it once the credentials are read, before any
/// thread or child starts (`remove_var` is not thread-safe). Returns what could
/// not be done, for a warning; the agent runs on regardless.
pub fn scrub_process(secrets: &[&str]) -> Vec<String> {
    let mut failed = Vec::new();
    for name in CREDENTIAL_ENV {
        std::env::remove_var(name);
    }
    if let Err(e) = overwrite_in_start_memory(secrets) {
        failed.push(format!("cannot overwrite the token in /proc/self/mem: {e}"));
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        failed.push(format!(
            "cannot make the agent non-dumpable: {}",
            io::Error::last_os_error()
        ));
    }
    failed
}

/// A warning if the token file can be read by others than its owner.
pub fn check_token_file(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "token file {}: readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

/// Overwrites every occurrence of each secret in the memory that
/// `/proc/self/cmdline` and `/proc/self/environ` read (the start-up argv and
/// environment) with `x`.
fn overwrite_in_start_memory(secrets: &[&str]) -> io::Result<()> {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|s| s.as_bytes())
        .filter(|s| s.len() >= SECRET_BYTES_MIN)
        .collect();
    if secrets.is_empty() {
        return Ok(());
    }
    let stat = std::fs::read("/proc/self/stat")?;
    let regions = start_regions(&stat)
        .ok_or_else(|| io::Error::other("no argv/environ addresses in /proc/self/stat"))?;
    let mem = File::options()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    for (start, end) in regions {
        let mut buf = vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)];
        mem.read_exact_at(&mut buf, start)?;
        if mask(&mut buf, &secrets) {
            mem.write_all_at(&buf, start)?;
        }
    }
    Ok(())
}

/// `[arg_start, arg_end)` and `[env_start, env_end)` from `/proc/self/stat`
/// (fields 48 to 51, counted after the command name in parentheses).
fn start_regions(stat: &[u8]) -> Option<[(u64, u64); 2]> {
    let after = stat.iter().rposition(|&b| b == b')')?;
    let text = std::str::from_utf8(&stat[after + 1..]).ok()?;
    // The first field after ')' is field 3 (state).
    let field = |n: usize| -> Option<u64> { text.split_whitespace().nth(n - 3)?.parse().ok() };
    let (a0, a1, e0, e1) = (field(48)?, field(49)?, field(50)?, field(51)?);
    (a0 <= a1 && e0 <= e1).then_some([(a0, a1), (e0, e1)])
}

/// Replaces every occurrence of each secret in `buf` with `x`; true if any.
fn mask(buf: &mut [u8], secrets: &[&[u8]]) -> bool {
    let mut changed = false;
    for s in secrets {
        let mut i = 0;
        while i + s.len() <= buf.len() {
            if &buf[i..i + s.len()] == *s {
                buf[i..i + s.len()].fill(b'x');
                changed = true;
                i += s.len();
            } else {
                i += 1;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_replaces_every_occurrence_and_skips_short_secrets() {
        let mut buf = b"--token\0abcdefgh12\0SCALABLE_TOKEN=abcdefgh12\0".to_vec();
        assert!(mask(&mut buf, &[b"abcdefgh12"]));
        assert_eq!(
            buf,
            b"--token\0xxxxxxxxxx\0SCALABLE_TOKEN=xxxxxxxxxx\0".to_vec()
        );
        assert!(!mask(&mut buf, &[b"nothere1"]));
    }

    #[test]
    fn start_regions_are_read_from_this_process() {
        let stat = std::fs::read("/proc/self/stat").expect("stat");
        let [(a0, a1), (e0, e1)] = start_regions(&stat).expect("regions");
        assert!(
            a0 > 0 && a0 < a1 && e0 > 0 && e0 <= e1,
            "{a0} {a1} {e0} {e1}"
        );
        let cmdline = std::fs::read("/proc/self/cmdline").expect("cmdline");
        assert_eq!(cmdline.len() as u64, a1 - a0);
    }

    #[test]
    fn world_readable_token_file_is_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.token");
        std::fs::write(&p, "a b c").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let w = check_token_file(&p).expect("a warning");
        assert!(w.contains("644") && w.contains("agent.token"), "{w}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(check_token_file(&p), None);
    }
}
