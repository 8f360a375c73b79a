//! Cpu binding: each task gets its own cores (SPEC §6 partitionable slots).
//!
//! Owns: the agent's allowed cores (`sched_getaffinity`), the free-list that gives
//! each task `resources.cpus` distinct cores, and binding a started task to them.
//! The task sees `SCALABLE_CPUS` (the count, SPEC §4) and `SCALABLE_CPU_LIST`
//! (`0,1`, only when bound).
//!
//! When binding applies: the agent owns more than one core and advertises no more
//! cpus than it owns. An agent told `--cpus 8` on a 2-core box oversubscribes on
//! purpose; pinning 8 one-cpu tasks onto 2 cores would only add constraints, so it
//! does not bind at all. A task asking for 0 cpus is not bound either.
//!
//! How: the executor's launcher (`executor::launch`) has the child bind itself
//! between `clone` and `execve`, so the task and everything it forks are bound
//! from birth. (Binding the child by pid after the spawn left a window: under
//! load a shell had forked its first child before the call landed, measured
//! here. Narrowing the spawning thread around the spawn, the way before, made
//! that thread wait behind the new task for its core.) Cost: one
//! `sched_setaffinity` in the child per bound spawn.

use std::collections::BTreeSet;
use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The cores this process may run on, ascending.
pub fn own_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect())
}

/// Binds process or thread `pid` to `cpus`.
pub fn bind(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(io::Error::from)?;
    }
    sched_setaffinity(Pid::from_raw(pid), &set).map_err(io::Error::from)
}

/// The core the calling thread runs on now (a vDSO call, no syscall), if known.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns a cpu number or -1.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// `0,1,5`: the form of `SCALABLE_CPU_LIST` and of `--cpuset-cpus`.
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut s = String::with_capacity(cpus.len() * 3);
    for (i, c) in cpus.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&c.to_string());
    }
    s
}

/// Free cores of an agent that binds.
#[derive(Debug, Clone)]
pub struct CpuPool {
    free: BTreeSet<usize>,
    total: usize,
}

impl CpuPool {
    /// The pool for an agent that owns `own` cores and advertises `advertised`
    /// cpus, or why it does not bind.
    pub fn plan(own: &[usize], advertised: u32) -> Result<CpuPool, String> {
        if own.len() <= 1 {
            return Err(format!("the agent owns {} core(s)", own.len()));
        }
        if advertised as usize > own.len() {
            return Err(format!(
                "{advertised} cpus advertised on {} cores (oversubscribed on purpose)",
                own.len()
            ));
        }
        Ok(CpuPool {
            free: own.iter().copied().collect(),
            total: own.len(),
        })
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// `n` distinct free cores (the lowest ids), or `None` with nothing taken.
    pub fn take(&mut self, n: u32) -> Option<Vec<usize>> {
        self.take_near(n, None)
    }

    /// `n` distinct free cores: `near` first if it is free (the core the
    /// spawning thread runs on, [`current_cpu`]), then the lowest ids; `None`
    /// with nothing taken. Why: narrowing a thread to a core it is not on makes
    /// the kernel migrate it inside `sched_setaffinity` (two context switches,
    /// about a tenth of the agent's cpu per `/bin/true` in issue 15's profile);
    /// narrowing it to the core it is on costs the syscall only.
    pub fn take_near(&mut self, n: u32, near: Option<usize>) -> Option<Vec<usize>> {
        let n = n as usize;
        if n == 0 || n > self.free.len() {
            return None;
        }
        let first = near.filter(|c| self.free.contains(c));
        let rest = self.free.iter().copied().filter(|&c| Some(c) != first);
        let mut cores: Vec<usize> = first.into_iter().chain(rest).take(n).collect();
        cores.sort_unstable();
        for c in &cores {
            self.free.remove(c);
        }
        Some(cores)
    }

    /// Returns cores a finished task held.
    pub fn give(&mut self, cores: &[usize]) {
        for &c in cores {
            let fresh = self.free.insert(c);
            debug_assert!(fresh, "core {c} given back twice");
        }
        debug_assert!(self.free.len() <= self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_only_with_more_than_one_core_and_no_oversubscription() {
        assert!(CpuPool::plan(&[0], 1).is_err());
        let e = CpuPool::plan(&[0, 1], 8).expect_err("oversubscribed");
        assert!(e.contains("8 cpus advertised on 2 cores"), "{e}");
        let p = CpuPool::plan(&[0, 1, 2, 3], 2).expect("binds");
        assert_eq!((p.free(), p.total()), (4, 4));
    }

    #[test]
    fn tasks_get_distinct_cores_and_give_them_back() {
        let mut p = CpuPool::plan(&[0, 2, 4, 6], 4).expect("binds");
        let a = p.take(2).expect("two");
        let b = p.take(1).expect("one");
        assert_eq!(a, vec![0, 2]);
        assert_eq!(b, vec![4]);
        assert!(p.take(2).is_none(), "only one left");
        assert!(p.take(0).is_none(), "a 0-cpu task is not bound");
        p.give(&a);
        assert_eq!(p.take(3), Some(vec![0, 2, 6]));
        p.give(&[0, 2, 6]);
        // The spawning thread's core first when it is free, listed in order.
        assert_eq!(p.take_near(2, Some(6)), Some(vec![0, 6]));
        assert_eq!(p.take_near(1, Some(6)), Some(vec![2]), "6 is taken");
        assert_eq!(p.take_near(1, Some(2)), None, "none is free");
        assert_eq!(cpu_list(&[0, 2, 6]), "0,2,6");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn own_cpus_are_the_affinity_mask() {
        let own = own_cpus().expect("sched_getaffinity");
        assert!(!own.is_empty());
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(own.len(), n, "available_parallelism reads the same mask");
    }

    #[test]
    fn bind_narrows_a_threads_mask() {
        let own = own_cpus().expect("mask");
        // Not a child process (an executor test's reaper in this test binary would
        // reap it): bind this test's own thread by its tid, then restore it.
        let tid = nix::unistd::gettid().as_raw();
        let before = sched_getaffinity(Pid::from_raw(tid)).expect("mask");
        bind(tid, &own[..1]).expect("bind");
        assert_eq!(
            std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
                .expect("status")
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string()),
            Some(own[0].to_string())
        );
        sched_setaffinity(Pid::from_raw(tid), &before).expect("restore");
    }
}
