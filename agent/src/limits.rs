//! Memory limits of tasks (SPEC §5 Memory): how the agent measures a task's
//! memory and when it kills it as `MEMORY_EXHAUSTION`.
//!
//! Owns: the choice of mode, per-task cgroups (cgroup v2 mode) and the process-tree
//! RSS sampler (sampling mode). The executor calls in here; this module kills
//! nothing itself and runs no processes.
//!
//! The limit of a task is its memory request × `--memory-margin` (default 1.2); a
//! request of 0 means no limit. Two modes, chosen once at agent start:
//!
//! - **cgroup-v2**: the agent's own cgroup v2 group enables the memory controller
//!   for its children (`cgroup.subtree_control` lists `memory`, e.g. systemd
//!   `Delegate=yes`). The agent makes `scalable-agent-<pid>/` under it, and per
//!   limited task `t<attempt>/` with `memory.max` = limit, `memory.oom.group` = 1
//!   and `memory.swap.max` = 0. The kernel enforces the limit; `memory.events`
//!   `oom_kill` tells the end, `memory.peak` the peak. The task's leader is moved
//!   in right after the spawn (no `pre_exec`; a child forked in the microseconds
//!   before that stays outside; see `cpuset` for the same window).
//! - **sampling** (everywhere else, e.g. a host that mounts cgroups "hybrid" with
//!   the memory controller on v1, as this project's machines do): every
//!   [`SAMPLE_INTERVAL`] the executor's watchdog sums the RSS of every process in
//!   each task's process group (one pass over `/proc/*/stat`, as Slurm's
//!   `jobacct_gather/linux` does) and SIGKILLs a group above its limit. Tasks
//!   without a limit are sampled each second only, for the peak telemetry. Shared
//!   pages are counted in every process that maps them (an overestimate for tasks
//!   of many processes; the margin absorbs it), and a task can outgrow its limit
//!   between two samples.
//!
//! Either way nothing is added to the spawn of a task without a memory request,
//! and the sampler does not run per spawn.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scalable_common::protocol::AttemptId;

/// Default `--memory-margin`: kill above request × 1.2.
pub const MEMORY_MARGIN_DEFAULT: f64 = 1.2;
/// How often tasks with a memory limit are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often tasks without a limit are sampled (peak telemetry only).
pub const SAMPLE_INTERVAL_UNLIMITED: Duration = Duration::from_secs(1);
/// Attempts to remove a task cgroup whose processes are still exiting.
const CGROUP_RMDIR_TRIES_MAX: u32 = 5;

/// The memory limit of a request: request × margin, `None` for a request of 0.
pub fn memory_limit_bytes(request_bytes: u64, margin: f64) -> Option<u64> {
    if request_bytes == 0 {
        return None;
    }
    let limit = (request_bytes as f64 * margin).ceil();
    // f64 → u64 saturates; a margin below 1 is refused by the flag parser.
    Some((limit as u64).max(request_bytes))
}

/// How this agent enforces memory limits.
#[derive(Debug, Clone)]
pub enum LimitMode {
    CgroupV2(Arc<CgroupV2>),
    Sampling,
}

impl LimitMode {
    /// As advertised in `AgentHello::limit_mode`.
    pub fn name(&self) -> &'static str {
        match self {
            LimitMode::CgroupV2(_) => "cgroup-v2",
            LimitMode::Sampling => "sampling",
        }
    }
}

/// Picks the mode for this process; the string says why (for the log).
pub fn detect() -> (LimitMode, String) {
    let (Ok(cgroup), Ok(mountinfo)) = (
        std::fs::read_to_string("/proc/self/cgroup"),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return (LimitMode::Sampling, "cannot read /proc/self/cgroup".into());
    };
    let base = match plan_cgroup_v2(&cgroup, &mountinfo, |p| std::fs::read_to_string(p).ok()) {
        Ok(base) => base,
        Err(why) => return (LimitMode::Sampling, why),
    };
    match CgroupV2::setup(&base, std::process::id()) {
        Ok(cg) => {
            let why = format!("task cgroups under {}", cg.dir.display());
            (LimitMode::CgroupV2(Arc::new(cg)), why)
        }
        Err(e) => (
            LimitMode::Sampling,
            format!("cannot make a cgroup under {}: {e}", base.display()),
        ),
    }
}

/// The agent's cgroup v2 directory if it lets the agent give children their own
/// memory limits, else why not. Pure over `/proc/self/cgroup`, mountinfo and a
/// file reader.
pub fn plan_cgroup_v2(
    proc_self_cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Result<PathBuf, String> {
    use crate::resources::{cgroup_dirs, parse_mountinfo, parse_proc_cgroup};
    let Some(mount) = parse_mountinfo(mountinfo).v2 else {
        return Err("no cgroup v2 hierarchy is mounted".into());
    };
    let Some(path) = parse_proc_cgroup(proc_self_cgroup).v2 else {
        return Err("the agent is in no cgroup v2 group".into());
    };
    let dir = cgroup_dirs(&mount, &path)
        .into_iter()
        .next()
        .unwrap_or_else(|| mount.mount_point.clone());
    let has_memory = |file: &str| {
        read(&dir.join(file)).is_some_and(|s| s.split_whitespace().any(|c| c == "memory"))
    };
    if !has_memory("cgroup.controllers") {
        return Err(format!(
            "cgroup v2 at {} has no memory controller (hybrid mode: memory is on the v1 hierarchy)",
            dir.display()
        ));
    }
    if !has_memory("cgroup.subtree_control") {
        return Err(format!(
            "memory is not delegated to children of {} (cgroup.subtree_control)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The agent's own subtree of task cgroups (cgroup-v2 mode). Removed on drop.
#[derive(Debug)]
pub struct CgroupV2 {
    dir: PathBuf,
}

impl CgroupV2 {
    /// Makes `base/scalable-agent-<pid>` and enables memory for its children.
    pub fn setup(base: &Path, pid: u32) -> io::Result<CgroupV2> {
        let dir = base.join(format!("scalable-agent-{pid}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), "+memory") {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::new(
                e.kind(),
                format!("enabling memory in {}: {e}", dir.display()),
            ));
        }
        Ok(CgroupV2 { dir })
    }

    /// A cgroup for one attempt, limited to `limit_bytes`, before it is spawned.
    pub fn create_task(&self, attempt: AttemptId, limit_bytes: u64) -> io::Result<TaskCgroup> {
        let dir = self.dir.join(format!("t{attempt}"));
        std::fs::create_dir(&dir)?;
        let cg = TaskCgroup { dir };
        if let Err(e) = std::fs::write(cg.dir.join("memory.max"), limit_bytes.to_string()) {
            cg.remove();
            return Err(e);
        }
        // Kill the whole task on OOM, never swap instead of hitting the limit.
        // Both files are optional (older kernels, no swap accounting).
        let _ = std::fs::write(cg.dir.join("memory.oom.group"), "1");
        let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        Ok(cg)
    }
}

impl Drop for CgroupV2 {
    fn drop(&mut self) {
        // Task cgroups are removed as tasks end; leftovers are from tasks that
        // could not be cleaned (still exiting). Best effort, then our own dir.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One attempt's cgroup (cgroup-v2 mode).
#[derive(Debug)]
pub struct TaskCgroup {
    dir: PathBuf,
}

impl TaskCgroup {
    /// Moves the started task's leader (and so its future children) in.
    pub fn add(&self, pid: libc::pid_t) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// `memory.peak` (kernel 5.19+), if the kernel has it.
    pub fn peak_bytes(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("memory.peak"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the kernel OOM-killed anything in the group.
    pub fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .is_some_and(|s| oom_kills(&s) > 0)
    }

    /// Kills whatever is left (also processes that left the process group) and
    /// removes the cgroup; logs if it cannot.
    pub fn remove(self) {
        // Never create the file: it exists only where the kernel has it (5.14+).
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
        for i in 0..CGROUP_RMDIR_TRIES_MAX {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if i + 1 == CGROUP_RMDIR_TRIES_MAX => {
                    tracing::warn!("cannot remove task cgroup {}: {e}", self.dir.display());
                }
                // Busy: killed processes are still exiting.
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

/// `oom_kill` of `memory.events` (`"low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"`).
pub fn oom_kills(memory_events: &str) -> u64 {
    memory_events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ sampling

/// `(pgid, rss_pages)` from the text of `/proc/PID/stat`. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(libc::pid_t, u64)> {
    parse_proc_row(stat).map(|r| (r.pgrp, r.rss_pages))
}

/// One process as one pass over `/proc` saw it.
#[derive(Debug, Clone, Copy)]
struct ProcRow {
    ppid: libc::pid_t,
    pgrp: libc::pid_t,
    rss_pages: u64,
    /// utime + stime + cutime + cstime: its own cpu and that of the children
    /// it waited for (which are gone from `/proc`, so nothing counts twice).
    cpu_ticks: u64,
}

fn parse_proc_row(stat: &[u8]) -> Option<ProcRow> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15)
    // cutime(16) cstime(17) ... rss(24).
    let ppid = fields.nth(1)?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let mut cpu_ticks = 0u64;
    let mut field = fields.nth(14 - 6);
    for _ in 14..=17 {
        cpu_ticks = cpu_ticks.saturating_add(field?.parse::<u64>().ok()?);
        field = fields.next();
    }
    let rss_pages = fields.nth(24 - 19)?.parse().ok()?;
    Some(ProcRow {
        ppid,
        pgrp,
        rss_pages,
        cpu_ticks,
    })
}

/// What one pass over `/proc` found for one task's process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSample {
    /// Summed RSS of the group and of the processes that left it.
    pub rss_bytes: u64,
    /// Summed cpu time of the same processes, with the children they waited
    /// for, in milliseconds.
    pub cpu_ms: u64,
    /// Leaders of the groups that left the task's group (a `setsid` daemon).
    pub escaped: Vec<libc::pid_t>,
}

/// One pass over `/proc`: for each task group `pgids[i]`, the summed RSS of its
/// processes and of every process that left it but descends from it (by the
/// parent chain as it is now), and the groups such processes lead. A chain that
/// reaches the agent (`agent`, a subreaper: the parent died) is tied to a task
/// by `adopt(pid)`. Processes that vanish mid-scan are skipped.
pub fn sample_groups(
    pgids: &[libc::pid_t],
    agent: libc::pid_t,
    adopt: impl Fn(libc::pid_t) -> Option<usize>,
) -> Vec<GroupSample> {
    sample_groups_in(Path::new("/proc"), pgids, agent, adopt)
}

fn sample_groups_in(
    proc_dir: &Path,
    pgids: &[libc::pid_t],
    agent: libc::pid_t,
    adopt: impl Fn(libc::pid_t) -> Option<usize>,
) -> Vec<GroupSample> {
    let mut out = vec![GroupSample::default(); pgids.len()];
    if pgids.is_empty() {
        return out;
    }
    let page = page_bytes();
    let tick_ms = 1_000 / clock_ticks_per_s().max(1);
    let rows = read_proc_rows(proc_dir);
    let tree = ProcTree {
        rows: &rows,
        pgids,
        agent,
    };
    let mut memo = HashMap::new();
    for (&pid, row) in &rows {
        let Some(i) = tree.owner(pid, &adopt, &mut memo) else {
            continue;
        };
        let (pgrp, o) = (row.pgrp, &mut out[i]);
        o.rss_bytes = o
            .rss_bytes
            .saturating_add(row.rss_pages.saturating_mul(page));
        o.cpu_ms = o
            .cpu_ms
            .saturating_add(row.cpu_ticks.saturating_mul(tick_ms));
        if pgrp == pid && pgids[i] != pgrp {
            o.escaped.push(pid);
        }
    }
    out
}

/// Every process's row, by pid.
fn read_proc_rows(proc_dir: &Path) -> HashMap<libc::pid_t, ProcRow> {
    let mut rows = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return rows;
    };
    let mut buf = Vec::with_capacity(512);
    let mut path = proc_dir.to_path_buf();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        path.push(&name);
        path.push("stat");
        buf.clear();
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut buf));
        path.pop();
        path.pop();
        if read.is_ok() {
            if let Some(row) = parse_proc_row(&buf) {
                rows.insert(pid, row);
            }
        }
    }
    rows
}

/// The process table of one scan, and which task each process belongs to.
struct ProcTree<'a> {
    rows: &'a HashMap<libc::pid_t, ProcRow>,
    pgids: &'a [libc::pid_t],
    agent: libc::pid_t,
}

/// Longest parent chain followed to a task (deeper trees are not tasks' own).
const CHAIN_DEPTH_MAX: usize = 64;

impl ProcTree<'_> {
    /// The index of the task `pid` belongs to: its group is a task's, or its
    /// parent's chain leads to one, or to the agent and `adopt` knows it.
    fn owner(
        &self,
        pid: libc::pid_t,
        adopt: &impl Fn(libc::pid_t) -> Option<usize>,
        memo: &mut HashMap<libc::pid_t, Option<usize>>,
    ) -> Option<usize> {
        let mut chain = Vec::new();
        let mut at = pid;
        let found = loop {
            if let Some(&known) = memo.get(&at) {
                break known;
            }
            let Some(&ProcRow { ppid, pgrp, .. }) = self.rows.get(&at) else {
                break None;
            };
            chain.push(at);
            if let Some(i) = self.pgids.iter().position(|&g| g == pgrp) {
                break Some(i);
            }
            if ppid == self.agent {
                break adopt(at);
            }
            if ppid <= 1 || chain.len() >= CHAIN_DEPTH_MAX {
                break None;
            }
            at = ppid;
        };
        for p in chain {
            memo.insert(p, found);
        }
        found
    }
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_request_times_margin_and_zero_is_none() {
        assert_eq!(memory_limit_bytes(0, 1.2), None);
        assert_eq!(memory_limit_bytes(100 << 20, 1.2), Some(125_829_120));
        assert_eq!(memory_limit_bytes(1000, 1.0), Some(1000));
        assert_eq!(memory_limit_bytes(u64::MAX, 2.0), Some(u64::MAX));
    }

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        let stat = b"4242 (my (odd) prog) S 1 4240 4240 0 -1 4194560 100 0 0 0 5 1 0 0 20 0 1 0 123 10485760 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((4240, 2560)));
        let row = parse_proc_row(stat).unwrap();
        assert_eq!((row.ppid, row.cpu_ticks), (1, 6), "utime 5 + stime 1");
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) S 0"), None);
    }

    #[test]
    fn sampler_sums_a_real_process_group() {
        // Sample the group this test process is in; it holds at least our own
        // resident pages.
        // SAFETY: getpgid(0) has no preconditions.
        let pgid = unsafe { libc::getpgid(0) };
        let rss: Vec<u64> = sample_groups(&[pgid, -5], -1, |_| None)
            .into_iter()
            .map(|g| g.rss_bytes)
            .collect();
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let own: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("resident");
        assert!(rss[0] >= own * page_bytes() / 2, "{rss:?} vs {own} pages");
        assert_eq!(rss[1], 0, "no such group");
    }

    /// A fake `/proc` with `(pid, ppid, pgid, rss_pages)` rows.
    fn fake_proc(rows: &[(i32, i32, i32, u64)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (pid, ppid, pgid, pages) in rows {
            let dir = d.path().join(pid.to_string());
            std::fs::create_dir(&dir).expect("mkdir");
            let mut fields = vec!["0".to_string(); 30];
            fields[1] = ppid.to_string();
            fields[2] = pgid.to_string();
            fields[21] = pages.to_string();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} (t) S {}", fields[1..].join(" ")),
            )
            .expect("write");
        }
        std::fs::create_dir(d.path().join("self")).expect("mkdir");
        d
    }

    #[test]
    fn fake_proc_dir_is_summed_by_group() {
        let d = fake_proc(&[(10, 2, 10, 100), (11, 10, 10, 50), (12, 2, 12, 7)]);
        let page = page_bytes();
        let rss: Vec<u64> = sample_groups_in(d.path(), &[10, 12, 99], 2, |_| None)
            .into_iter()
            .map(|g| g.rss_bytes)
            .collect();
        assert_eq!(rss, vec![150 * page, 7 * page, 0]);
    }

    #[test]
    fn processes_that_left_the_group_count_for_their_task() {
        // Task groups 10 and 12 (leaders children of agent 2). 13 left group 10
        // (setsid) and has a child 14; 15 was re-parented to the agent and is
        // adopted by task 12; 16 is someone else's.
        let d = fake_proc(&[
            (10, 2, 10, 100),
            (11, 10, 10, 50),
            (12, 2, 12, 7),
            (13, 11, 13, 5),
            (14, 13, 13, 1),
            (15, 2, 15, 3),
            (16, 1, 16, 1000),
        ]);
        let page = page_bytes();
        let got = sample_groups_in(d.path(), &[10, 12], 2, |pid| (pid == 15).then_some(1));
        assert_eq!(got[0].rss_bytes, 156 * page);
        assert_eq!(got[0].escaped, vec![13]);
        assert_eq!(got[1].rss_bytes, 10 * page);
        assert_eq!(got[1].escaped, vec![15]);
    }

    #[test]
    fn memory_events_oom_kill_count() {
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n"),
            1
        );
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }

    const MOUNTS_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const MOUNTS_V2: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

    fn files(map: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: Vec<(PathBuf, String)> = map
            .iter()
            .map(|(p, c)| (PathBuf::from(p), c.to_string()))
            .collect();
        move |p| map.iter().find(|(q, _)| q == p).map(|(_, c)| c.clone())
    }

    #[test]
    fn plan_in_hybrid_mode_falls_back_to_sampling() {
        let err = plan_cgroup_v2(
            "4:memory:/x\n0::/\n",
            MOUNTS_HYBRID,
            files(&[("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")]),
        )
        .expect_err("no memory controller on v2");
        assert!(err.contains("hybrid"), "{err}");
    }

    #[test]
    fn plan_needs_memory_delegated_to_children() {
        let cg = "0::/user.slice/agent.scope\n";
        let dir = "/sys/fs/cgroup/user.slice/agent.scope";
        let controllers = format!("{dir}/cgroup.controllers");
        let subtree = format!("{dir}/cgroup.subtree_control");
        let err = plan_cgroup_v2(
            cg,
            MOUNTS_V2,
            files(&[(&controllers, "cpu memory pids"), (&subtree, "")]),
        )
        .expect_err("not delegated");
        assert!(err.contains("not delegated"), "{err}");
        let ok = plan_cgroup_v2(
            cg,
            MOUNTS_V2,
            files(&[(&controllers, "cpu memory pids"), (&subtree, "memory pids")]),
        );
        assert_eq!(ok, Ok(PathBuf::from(dir)));
        assert!(plan_cgroup_v2("", MOUNTS_V2, files(&[])).is_err());
        assert!(plan_cgroup_v2(cg, "", files(&[])).is_err());
    }

    /// The file plumbing of cgroup-v2 mode against a plain directory (this
    /// machine kind cannot give the agent a v2 memory controller): what is written
    /// where, and what is read back.
    #[test]
    fn cgroup_files_written_and_read_back() {
        let base = tempfile::tempdir().expect("tempdir");
        let cg = CgroupV2::setup(base.path(), 77).expect("setup");
        let agent_dir = base.path().join("scalable-agent-77");
        assert_eq!(
            std::fs::read_to_string(agent_dir.join("cgroup.subtree_control")).expect("read"),
            "+memory"
        );
        let t = cg.create_task(5, 120 << 20).expect("task cgroup");
        let tdir = agent_dir.join("t5");
        let read = |f: &str| std::fs::read_to_string(tdir.join(f)).expect("read");
        assert_eq!(read("memory.max"), "125829120");
        assert_eq!(read("memory.oom.group"), "1");
        assert_eq!(read("memory.swap.max"), "0");
        t.add(4242).expect("add");
        assert_eq!(read("cgroup.procs"), "4242");
        assert_eq!(t.peak_bytes(), None);
        assert!(!t.oom_killed());
        std::fs::write(tdir.join("memory.peak"), "130000000\n").expect("write");
        std::fs::write(tdir.join("memory.events"), "oom 1\noom_kill 1\n").expect("write");
        assert_eq!(t.peak_bytes(), Some(130_000_000));
        assert!(t.oom_killed());
        // A real cgroup dir empties itself; a plain one must be emptied first.
        for f in std::fs::read_dir(&tdir).expect("ls").flatten() {
            std::fs::remove_file(f.path()).expect("rm");
        }
        t.remove();
        assert!(!tdir.exists());
        std::fs::remove_file(agent_dir.join("cgroup.subtree_control")).expect("rm");
        drop(cg);
        assert!(
            !agent_dir.exists(),
            "the agent's subtree is removed on drop"
        );
    }
}
