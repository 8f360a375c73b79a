//! Detects what this agent offers: cpus, memory and GPUs (SPEC §6).
//!
//! Owns the `--cpus/--memory/--gpus auto` rules: an explicit value wins; an `auto`
//! one comes from Slurm's environment when present, else from the cgroup limits of
//! the agent's own cgroup (v2, or v1 where the machine mounts cgroups "hybrid"),
//! else from the host. GPUs are counted here from `CUDA_VISIBLE_DEVICES` only;
//! the agent passes the count `gpus` detected (which also asks `nvidia-smi`, a
//! process this module never runs).
//!
//! Everything that interprets text is a pure function over the env lookup or the
//! file contents, so it is unit-tested without a Slurm job or a cgroup; [`detect`]
//! is the thin wrapper that reads the real environment and files.

use std::path::{Path, PathBuf};

use scalable_common::resources::Resources;

/// Limits at or above this many bytes mean "no limit" (cgroup v1 reports
/// 9223372036854771712 when unlimited).
const UNLIMITED_BYTES_MIN: u64 = 1 << 60;
/// Slurm memory variables are in MiB ("MB" in Slurm's words).
const SLURM_MEM_UNIT_BYTES: u64 = 1 << 20;

/// What the agent offers and where the `auto` values came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub resources: Resources,
    /// The most specific source any `auto` value came from: `"slurm"`, `"cgroup"`
    /// or `"host"`; `"explicit"` when no value was `auto`.
    pub source: &'static str,
}

/// What one source says; `None` means it sets no limit or does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// Resources for the agent; `None` arguments are `auto`.
pub fn detect(cpus: Option<u32>, memory_bytes: Option<u64>, gpus: Option<u32>) -> Detected {
    let env = |name: &str| std::env::var(name).ok();
    let slurm = slurm_limits(env);
    // Only read cgroup files when something is still unknown.
    let needs_more = (cpus.is_none() && slurm.cpus.is_none())
        || (memory_bytes.is_none() && slurm.memory_bytes.is_none());
    let cgroup = if needs_more {
        read_cgroup_limits()
    } else {
        Limits::default()
    };
    let host = Limits {
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| meminfo_total_bytes(&s)),
    };
    let cuda = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let auto_gpus = cuda_visible_devices_count(cuda.as_deref());
    combine(
        Limits { cpus, memory_bytes },
        gpus,
        slurm,
        cgroup,
        host,
        auto_gpus,
    )
}

/// Applies the precedence explicit > Slurm > cgroup > host. A cgroup memory limit
/// above the host's memory is no limit at all.
pub fn combine(
    explicit: Limits,
    gpus: Option<u32>,
    slurm: Limits,
    cgroup: Limits,
    host: Limits,
    auto_gpus: u32,
) -> Detected {
    // Rank of the most specific source used so far: 0 none, 1 host, 2 cgroup, 3 slurm.
    let mut rank = 0;
    let mut pick = |explicit: Option<u64>, slurm: Option<u64>, cgroup: Option<u64>, host| {
        if let Some(v) = explicit {
            return v;
        }
        let (v, r) = match (slurm, cgroup) {
            (Some(v), _) => (v, 3),
            (None, Some(v)) => (v, 2),
            (None, None) => (host, 1),
        };
        rank = rank.max(r);
        v
    };
    let cgroup_memory = match (cgroup.memory_bytes, host.memory_bytes) {
        (Some(c), Some(h)) if c >= h => None,
        (c, _) => c,
    };
    let cpus = pick(
        explicit.cpus.map(u64::from),
        slurm.cpus.map(u64::from),
        cgroup.cpus.map(u64::from),
        // At least one cpu: an agent that offers none could never run anything.
        u64::from(host.cpus.unwrap_or(1)),
    );
    let memory_bytes = pick(
        explicit.memory_bytes,
        slurm.memory_bytes,
        cgroup_memory,
        host.memory_bytes.unwrap_or(0),
    );
    let source = match rank {
        3 => "slurm",
        2 => "cgroup",
        1 => "host",
        _ => "explicit",
    };
    Detected {
        resources: Resources {
            // Came from u32 values only.
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            memory_bytes,
            gpus: gpus.unwrap_or(auto_gpus),
            custom: Vec::new(),
        },
        source,
    }
}

// --------------------------------------------------------------------- Slurm

/// Limits from a Slurm job's environment (`env` looks a variable up).
///
/// cpus: `SLURM_CPUS_ON_NODE`, else `SLURM_CPUS_PER_TASK` × `SLURM_NTASKS_PER_NODE`
/// (1 if unset), else the first count of `SLURM_JOB_CPUS_PER_NODE` (`"72(x2),36"`).
/// memory: `SLURM_MEM_PER_NODE` MiB, else `SLURM_MEM_PER_CPU` MiB × those cpus.
/// `0` (Slurm's "all of the node") counts as not set.
pub fn slurm_limits(env: impl Fn(&str) -> Option<String>) -> Limits {
    let num = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    let cpus = num("SLURM_CPUS_ON_NODE")
        .or_else(|| {
            let per_task = num("SLURM_CPUS_PER_TASK")?;
            Some(per_task * num("SLURM_NTASKS_PER_NODE").unwrap_or(1))
        })
        .or_else(|| {
            let v = env("SLURM_JOB_CPUS_PER_NODE")?;
            let first = v.split([',', '(']).next()?;
            first.trim().parse::<u64>().ok()
        })
        .filter(|&n| n > 0)
        .and_then(|n| u32::try_from(n).ok());
    let memory_bytes = slurm_mem(&env, "SLURM_MEM_PER_NODE")
        .or_else(|| {
            let per_cpu = slurm_mem(&env, "SLURM_MEM_PER_CPU")?;
            per_cpu.checked_mul(u64::from(cpus?))
        })
        .filter(|&b| b > 0);
    Limits { cpus, memory_bytes }
}

/// A Slurm memory value: MiB, or with a K/M/G/T suffix.
fn slurm_mem(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<u64> {
    let v = env(name)?;
    let v = v.trim();
    let (digits, unit) = match v.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_uppercase()),
        _ => (v, 'M'),
    };
    let n: u64 = digits.parse().ok()?;
    let unit_bytes = match unit {
        'K' => 1 << 10,
        'M' => SLURM_MEM_UNIT_BYTES,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit_bytes).filter(|&b| b > 0)
}

// -------------------------------------------------------------------- cgroups

/// The agent's cgroup paths from `/proc/self/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// The v2 (unified) path, line `0::PATH`.
    pub v2: Option<String>,
    /// The v1 paths of the memory and cpu controllers.
    pub v1_memory: Option<String>,
    pub v1_cpu: Option<String>,
}

/// Parses `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` per line).
pub fn parse_proc_cgroup(contents: &str) -> CgroupPaths {
    let mut out = CgroupPaths::default();
    for line in contents.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            out.v2 = Some(path.to_string());
            continue;
        }
        for c in controllers.split(',') {
            match c {
                "memory" => out.v1_memory = Some(path.to_string()),
                "cpu" => out.v1_cpu = Some(path.to_string()),
                _ => {}
            }
        }
    }
    out
}

/// Where a cgroup hierarchy is mounted: the mount point and which of the
/// hierarchy's directories it shows (`root`, not `/` inside some containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    pub root: String,
}

/// The cgroup mounts of interest, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub v2: Option<CgroupMount>,
    pub v1_memory: Option<CgroupMount>,
    pub v1_cpu: Option<CgroupMount>,
}

/// Parses `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
pub fn parse_mountinfo(contents: &str) -> CgroupMounts {
    let mut out = CgroupMounts::default();
    for line in contents.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let mut tail = after.split(' ');
        let (Some(fstype), Some(_source), Some(super_opts)) =
            (tail.next(), tail.next(), tail.next())
        else {
            continue;
        };
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount = CgroupMount {
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            root: unescape_mountinfo(root),
        };
        match fstype {
            "cgroup2" => {
                out.v2.get_or_insert(mount);
            }
            "cgroup" => {
                for opt in super_opts.split(',') {
                    match opt {
                        "memory" => {
                            out.v1_memory.get_or_insert(mount.clone());
                        }
                        "cpu" => {
                            out.v1_cpu.get_or_insert(mount.clone());
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\OOO` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories whose limits apply to a process in cgroup `path` of the
/// hierarchy mounted as `mount`: its own, then each ancestor up to the mount point
/// (a parent's limit binds the child too).
pub fn cgroup_dirs(mount: &CgroupMount, path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    // Inside a cgroup namespace or a bind mount the path may lie outside what is
    // mounted; then the mount point itself is the best we can see.
    let rel = path.strip_prefix(root).unwrap_or("");
    let rel = rel.trim_matches('/');
    let mut dirs = Vec::new();
    let mut dir = mount.mount_point.clone();
    dirs.push(dir.clone());
    if !rel.is_empty() {
        for part in rel.split('/') {
            dir.push(part);
            dirs.push(dir.clone());
        }
    }
    dirs.reverse();
    dirs
}

/// `cpu.max` (`"QUOTA PERIOD"` or `"max PERIOD"`) → whole cpus, rounded up.
pub fn cgroup_v2_cpus(cpu_max: &str) -> Option<u32> {
    let mut it = cpu_max.split_whitespace();
    let quota = it.next()?;
    let period = it.next().unwrap_or("100000");
    quota_cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// `memory.max` (bytes or `"max"`).
pub fn cgroup_v2_memory(memory_max: &str) -> Option<u64> {
    limit_bytes(memory_max)
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota `-1` means none).
pub fn cgroup_v1_cpus(quota_us: &str, period_us: &str) -> Option<u32> {
    quota_cpus(
        quota_us.trim().parse().ok()?,
        period_us.trim().parse().ok()?,
    )
}

/// `memory.limit_in_bytes` (a huge value means none).
pub fn cgroup_v1_memory(limit_in_bytes: &str) -> Option<u64> {
    limit_bytes(limit_in_bytes)
}

fn quota_cpus(quota: i64, period: i64) -> Option<u32> {
    // Non-positive means "no quota" (v1 writes -1).
    let (Ok(quota), Ok(period)) = (u64::try_from(quota), u64::try_from(period)) else {
        return None;
    };
    if quota == 0 || period == 0 {
        return None;
    }
    u32::try_from(quota.div_ceil(period)).ok()
}

fn limit_bytes(s: &str) -> Option<u64> {
    let n: u64 = s.trim().parse().ok()?;
    (n > 0 && n < UNLIMITED_BYTES_MIN).then_some(n)
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The agent's cgroup limits, read from /proc and /sys.
fn read_cgroup_limits() -> Limits {
    let (Ok(cgroup), Ok(mountinfo)) = (
        std::fs::read_to_string("/proc/self/cgroup"),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return Limits::default();
    };
    cgroup_limits(&cgroup, &mountinfo, |p| std::fs::read_to_string(p).ok())
}

/// The tightest limits over a cgroup and its ancestors, v2 and v1, given the
/// contents of `/proc/self/cgroup` and `/proc/self/mountinfo` and a file reader.
pub fn cgroup_limits(
    proc_self_cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Limits {
    let paths = parse_proc_cgroup(proc_self_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    let mut limits = Limits::default();
    if let (Some(m), Some(p)) = (&mounts.v2, &paths.v2) {
        for dir in cgroup_dirs(m, p) {
            let cpus = read(&dir.join("cpu.max")).and_then(|s| cgroup_v2_cpus(&s));
            let mem = read(&dir.join("memory.max")).and_then(|s| cgroup_v2_memory(&s));
            limits.cpus = min_opt(limits.cpus, cpus);
            limits.memory_bytes = min_opt(limits.memory_bytes, mem);
        }
    }
    if let (Some(m), Some(p)) = (&mounts.v1_memory, &paths.v1_memory) {
        for dir in cgroup_dirs(m, p) {
            let mem = read(&dir.join("memory.limit_in_bytes")).and_then(|s| cgroup_v1_memory(&s));
            limits.memory_bytes = min_opt(limits.memory_bytes, mem);
        }
    }
    if let (Some(m), Some(p)) = (&mounts.v1_cpu, &paths.v1_cpu) {
        for dir in cgroup_dirs(m, p) {
            let cpus = match (
                read(&dir.join("cpu.cfs_quota_us")),
                read(&dir.join("cpu.cfs_period_us")),
            ) {
                (Some(q), Some(p)) => cgroup_v1_cpus(&q, &p),
                _ => None,
            };
            limits.cpus = min_opt(limits.cpus, cpus);
        }
    }
    limits
}

// ----------------------------------------------------------------- host, GPUs

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    let unit = match it.next() {
        Some("kB") | Some("KB") | Some("kiB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    n.checked_mul(unit)
}

/// GPUs named by `CUDA_VISIBLE_DEVICES`; unset, empty, `-1` or `NoDevFiles` → 0.
/// Like CUDA, counting stops at the first invalid entry (`"0,-1,1"` is one GPU).
pub fn cuda_visible_devices_count(value: Option<&str>) -> u32 {
    let Some(v) = value else {
        return 0;
    };
    let v = v.trim();
    if v.eq_ignore_ascii_case("NoDevFiles") {
        return 0;
    }
    let n = v
        .split(',')
        .map(str::trim)
        .take_while(|d| !d.is_empty() && !d.starts_with('-'))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn slurm_cpus_on_node_and_mem_per_node() {
        let l = slurm_limits(env_of(&[
            ("SLURM_CPUS_ON_NODE", "8"),
            ("SLURM_MEM_PER_NODE", "16384"),
        ]));
        assert_eq!(l.cpus, Some(8));
        assert_eq!(l.memory_bytes, Some(16 * GIB));
    }

    #[test]
    fn slurm_mem_per_cpu_times_cpus() {
        let l = slurm_limits(env_of(&[
            ("SLURM_CPUS_PER_TASK", "4"),
            ("SLURM_NTASKS_PER_NODE", "2"),
            ("SLURM_MEM_PER_CPU", "1024"),
        ]));
        assert_eq!(l.cpus, Some(8));
        assert_eq!(l.memory_bytes, Some(8 * GIB));
    }

    #[test]
    fn slurm_job_cpus_per_node_and_suffixes() {
        let l = slurm_limits(env_of(&[
            ("SLURM_JOB_CPUS_PER_NODE", "72(x2),36"),
            ("SLURM_MEM_PER_NODE", "2G"),
        ]));
        assert_eq!(l.cpus, Some(72));
        assert_eq!(l.memory_bytes, Some(2 * GIB));
    }

    #[test]
    fn no_or_bad_slurm_env_says_nothing() {
        assert_eq!(slurm_limits(env_of(&[])), Limits::default());
        let l = slurm_limits(env_of(&[
            ("SLURM_CPUS_ON_NODE", "many"),
            ("SLURM_MEM_PER_NODE", "0"),
            ("SLURM_MEM_PER_CPU", "12Q"),
        ]));
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn proc_self_cgroup_hybrid() {
        let p = parse_proc_cgroup(
            "9:name=systemd:/\n4:memory:/process_api/febb\n2:cpu,cpuacct:/job/1\n0::/\n",
        );
        assert_eq!(p.v2.as_deref(), Some("/"));
        assert_eq!(p.v1_memory.as_deref(), Some("/process_api/febb"));
        assert_eq!(p.v1_cpu.as_deref(), Some("/job/1"));
    }

    #[test]
    fn mountinfo_finds_v2_and_v1_controllers() {
        let m = parse_mountinfo(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
             34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n\
             35 31 0:32 /slurm /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(
            m.v2,
            Some(CgroupMount {
                mount_point: "/sys/fs/cgroup/unified".into(),
                root: "/".into()
            })
        );
        let cpu = m.v1_cpu.expect("cpu mount");
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let mem = m.v1_memory.expect("memory mount");
        assert_eq!(mem.root, "/slurm");
    }

    #[test]
    fn mountinfo_unescapes_spaces() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
    }

    #[test]
    fn cgroup_dirs_walk_up_to_the_mount_point() {
        let m = CgroupMount {
            mount_point: "/sys/fs/cgroup/memory".into(),
            root: "/".into(),
        };
        assert_eq!(
            cgroup_dirs(&m, "/a/b"),
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/a/b"),
                PathBuf::from("/sys/fs/cgroup/memory/a"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        let m = CgroupMount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/slurm".into(),
        };
        assert_eq!(
            cgroup_dirs(&m, "/slurm/job_1"),
            vec![
                PathBuf::from("/sys/fs/cgroup/job_1"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        // A path outside the mounted part: only the mount point is visible.
        assert_eq!(
            cgroup_dirs(&m, "/other"),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
    }

    #[test]
    fn cgroup_v2_contents() {
        assert_eq!(cgroup_v2_cpus("max 100000\n"), None);
        assert_eq!(cgroup_v2_cpus("200000 100000\n"), Some(2));
        assert_eq!(cgroup_v2_cpus("150000 100000"), Some(2), "rounds up");
        assert_eq!(cgroup_v2_cpus("50000 100000"), Some(1));
        assert_eq!(cgroup_v2_cpus(""), None);
        assert_eq!(cgroup_v2_memory("max\n"), None);
        assert_eq!(cgroup_v2_memory("4294967296\n"), Some(4 * GIB));
        assert_eq!(cgroup_v2_memory("garbage"), None);
    }

    #[test]
    fn cgroup_v1_contents() {
        assert_eq!(cgroup_v1_cpus("-1\n", "100000\n"), None);
        assert_eq!(cgroup_v1_cpus("400000\n", "100000\n"), Some(4));
        assert_eq!(cgroup_v1_cpus("1\n", "0\n"), None);
        assert_eq!(cgroup_v1_memory("9223372036854771712\n"), None, "unlimited");
        assert_eq!(cgroup_v1_memory("2147483648\n"), Some(2 * GIB));
    }

    #[test]
    fn cgroup_limits_take_the_tightest_of_the_tree() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let cgroup = "4:memory:/job/step\n1:cpu:/job\n0::/job/step\n";
        let files: HashMap<&str, &str> = [
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/job/memory.limit_in_bytes",
                "8589934592\n",
            ),
            (
                "/sys/fs/cgroup/memory/job/step/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "300000\n"),
            ("/sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/unified/job/step/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/unified/job/memory.max", "4294967296\n"),
        ]
        .into_iter()
        .collect();
        let read = |p: &Path| p.to_str().and_then(|k| files.get(k)).map(|v| v.to_string());
        let l = cgroup_limits(cgroup, mountinfo, read);
        assert_eq!(l.cpus, Some(3));
        assert_eq!(l.memory_bytes, Some(4 * GIB), "v2 parent limit is tighter");
        let none = cgroup_limits(cgroup, mountinfo, |_| None);
        assert_eq!(none, Limits::default());
    }

    #[test]
    fn meminfo_total() {
        let s = "MemTotal:       24684084 kB\nMemFree:        1000 kB\n";
        assert_eq!(meminfo_total_bytes(s), Some(24684084 * 1024));
        assert_eq!(meminfo_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total_bytes("MemTotal: x kB\n"), None);
    }

    #[test]
    fn cuda_visible_devices() {
        assert_eq!(cuda_visible_devices_count(None), 0);
        assert_eq!(cuda_visible_devices_count(Some("")), 0);
        assert_eq!(cuda_visible_devices_count(Some("-1")), 0);
        assert_eq!(cuda_visible_devices_count(Some("NoDevFiles")), 0);
        assert_eq!(cuda_visible_devices_count(Some("0")), 1);
        assert_eq!(cuda_visible_devices_count(Some("0,1,3")), 3);
        assert_eq!(cuda_visible_devices_count(Some("GPU-8a1b,GPU-77c0")), 2);
        assert_eq!(cuda_visible_devices_count(Some("0,-1,1")), 1);
    }

    #[test]
    fn precedence_explicit_slurm_cgroup_host() {
        let host = Limits {
            cpus: Some(2),
            memory_bytes: Some(24 * GIB),
        };
        let slurm = Limits {
            cpus: Some(8),
            memory_bytes: None,
        };
        let cgroup = Limits {
            cpus: Some(1),
            memory_bytes: Some(4 * GIB),
        };
        let d = combine(Limits::default(), None, slurm, cgroup, host, 0);
        assert_eq!((d.resources.cpus, d.resources.memory_bytes), (8, 4 * GIB));
        assert_eq!(d.source, "slurm");

        let d = combine(Limits::default(), None, Limits::default(), cgroup, host, 2);
        assert_eq!((d.resources.cpus, d.resources.memory_bytes), (1, 4 * GIB));
        assert_eq!((d.resources.gpus, d.source), (2, "cgroup"));

        let d = combine(
            Limits::default(),
            None,
            Limits::default(),
            Limits::default(),
            host,
            0,
        );
        assert_eq!((d.resources.cpus, d.resources.memory_bytes), (2, 24 * GIB));
        assert_eq!(d.source, "host");

        let explicit = Limits {
            cpus: Some(3),
            memory_bytes: Some(GIB),
        };
        let d = combine(explicit, Some(0), slurm, cgroup, host, 2);
        assert_eq!(
            (d.resources.cpus, d.resources.memory_bytes, d.resources.gpus),
            (3, GIB, 0)
        );
        assert_eq!(d.source, "explicit");
    }

    #[test]
    fn cgroup_memory_above_the_host_is_no_limit() {
        let host = Limits {
            cpus: Some(2),
            memory_bytes: Some(24 * GIB),
        };
        let cgroup = Limits {
            cpus: None,
            memory_bytes: Some(64 * GIB),
        };
        let d = combine(Limits::default(), None, Limits::default(), cgroup, host, 0);
        assert_eq!(d.resources.memory_bytes, 24 * GIB);
        assert_eq!(d.source, "host");
    }

    #[test]
    fn detect_on_this_machine_is_sane() {
        let d = detect(None, None, Some(0));
        eprintln!("detected here: {d:?}");
        assert!(d.resources.cpus >= 1);
        assert!(d.resources.memory_bytes > 0);
        let d = detect(Some(3), Some(GIB), Some(1));
        assert_eq!(
            (d.resources.cpus, d.resources.memory_bytes, d.resources.gpus),
            (3, GIB, 1)
        );
    }
}
