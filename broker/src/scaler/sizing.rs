//! How many pilots a group's work asks for: the ready tasks a fresh pilot
//! of the group could run (and finish within its lifetime) plus the tasks
//! on its agents, each taking its predicted run time, spread over the
//! target duration (Dask's rule), in pilots of the group's shape (how many
//! tasks of each size one pilot runs at once).
//!
//! Arithmetic over the inputs; it must not apply bounds, cooldowns or
//! backoff (`decide` does).

use scalable_common::explain::{AgentShape, TagDemand};
use scalable_common::resources::Resources;

use super::input::ScaleInput;

/// A group's work, measured in pilots.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct GroupNeed {
    /// Ready tasks a fresh pilot could run and finish within its lifetime.
    pub fitting: u64,
    /// Ready tasks that fit a pilot but are predicted to outlast its lifetime.
    pub too_long: u64,
    /// Tasks assigned to or running on the group's agents.
    pub active: u64,
    /// Tasks of the most common size one pilot runs at once.
    pub slots_per_pilot: u32,
    /// Pilots the work keeps busy over the target duration (fractional).
    pub pilots: f64,
    /// Slot-seconds of work (tasks without a prediction: a target duration each).
    pub work_seconds: f64,
    /// Tasks whose tag has a predicted run time.
    pub predicted_tasks: u64,
    /// The longest task's predicted run time (a target duration if unknown).
    pub longest_seconds: f64,
}

/// The need of group `i` (its shape is the `i`-th passed to `Core::demand`).
pub(super) fn group_need(input: &ScaleInput, i: usize) -> GroupNeed {
    let group = &input.groups[i];
    let shape = &group.shape;
    let lifetime_s = shape.lifetime_ms.map(|ms| ms as f64 / 1000.0);
    let target_s = input.config.target_duration_seconds.max(0.001);
    let mut need = GroupNeed::default();
    let mut most = 0;
    for td in &input.demand.tags {
        let mut fit = td.fits.iter().find(|f| f.shape == i).map_or(0, |f| f.tasks);
        let serves =
            shape.tags.is_empty() || td.tag.as_ref().is_some_and(|t| shape.tags.contains(t));
        let active = if serves { td.assigned + td.running } else { 0 };
        let predicted = input.predictions.for_tag(td.tag.as_deref());
        if let (Some(p), Some(l)) = (predicted, lifetime_s) {
            if p > l {
                need.too_long += fit;
                fit = 0;
            }
        }
        let n = fit + active;
        if n == 0 {
            continue;
        }
        need.fitting += fit;
        need.active += active;
        let (per_pilot, per_task) = pilots_per_task(shape, td);
        if n > most {
            most = n;
            need.slots_per_pilot = per_pilot;
        }
        // Busy slots over the horizon: short tasks share one, a task longer
        // than the target holds one; never more slots than tasks.
        need.longest_seconds = need.longest_seconds.max(predicted.unwrap_or(target_s));
        let slots = match predicted {
            Some(p) => {
                let horizon = lifetime_s.map_or(target_s.max(p), |l| target_s.max(p).min(l));
                need.predicted_tasks += n;
                need.work_seconds += n as f64 * p;
                (n as f64 * p / horizon).min(n as f64)
            }
            None => {
                need.work_seconds += n as f64 * target_s;
                n as f64
            }
        };
        need.pilots += slots * per_task;
    }
    need
}

/// For a tag's ready sizes that fit `shape`: tasks of the most common size
/// one pilot runs at once, and the mean share of a pilot one task takes.
fn pilots_per_task(shape: &AgentShape, td: &TagDemand) -> (u32, f64) {
    let mut tasks = 0u64;
    let mut share = 0.0;
    let mut common = (0u64, 1u32);
    for s in &td.sizes {
        let per = per_pilot(&shape.resources, &s.resources);
        if per == 0 {
            continue;
        }
        tasks += s.tasks;
        share += s.tasks as f64 / per as f64;
        if s.tasks > common.0 {
            common = (s.tasks, per);
        }
    }
    if tasks == 0 {
        // Only running work, sizes unknown here: a cpu each.
        let per = known_cpus(&shape.resources);
        return (per, 1.0 / per as f64);
    }
    (common.1, share / tasks as f64)
}

/// Tasks asking `r` one agent offering `shape` runs at once (0: none fits).
/// A dimension the shape leaves unknown (0, or the "as large as can be" of
/// `shapes`) does not limit; a shape with no known size runs one at a time,
/// so an unknown size never makes one pilot look like many.
pub(super) fn per_pilot(shape: &Resources, r: &Resources) -> u32 {
    let known32 = |x: u32| x > 0 && x < u32::MAX;
    let mut n = u64::MAX;
    if r.cpus > 0 && known32(shape.cpus) {
        n = n.min((shape.cpus / r.cpus) as u64);
    }
    if r.memory_bytes > 0 && shape.memory_bytes > 0 && shape.memory_bytes < u64::MAX {
        n = n.min(shape.memory_bytes / r.memory_bytes);
    }
    if known32(shape.gpus) {
        if let Some(q) = shape.gpus.checked_div(r.gpus) {
            n = n.min(q as u64);
        }
    } else if r.gpus > 0 && shape.gpus == 0 {
        n = 0;
    }
    if n == u64::MAX {
        return known_cpus(shape).max(1);
    }
    n.min(u32::MAX as u64) as u32
}

/// The shape's cpus, 1 when unknown.
fn known_cpus(shape: &Resources) -> u32 {
    if shape.cpus == 0 || shape.cpus == u32::MAX {
        1
    } else {
        shape.cpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pilot_runs_as_many_tasks_as_its_known_size_allows() {
        let gib = 1u64 << 30;
        let shape = |cpus, memory_bytes, gpus| Resources {
            cpus,
            memory_bytes,
            gpus,
            custom: Vec::new(),
        };
        let task = |cpus, memory_bytes, gpus| shape(cpus, memory_bytes, gpus);
        assert_eq!(per_pilot(&shape(8, 16 * gib, 0), &task(2, 2 * gib, 0)), 4);
        assert_eq!(per_pilot(&shape(8, 16 * gib, 0), &task(1, 8 * gib, 0)), 2);
        assert_eq!(
            per_pilot(&shape(8, 16 * gib, 0), &task(1, 0, 1)),
            0,
            "no gpu"
        );
        assert_eq!(per_pilot(&shape(8, 0, 2), &task(1, gib, 1)), 2);
        // Unknown sizes (a local pool without threads_per_worker, a Slurm
        // node's memory) never make one pilot look like many.
        assert_eq!(
            per_pilot(&shape(u32::MAX, u64::MAX, u32::MAX), &task(1, gib, 0)),
            1
        );
        assert_eq!(
            per_pilot(&shape(u32::MAX, u64::MAX, u32::MAX), &task(0, 0, 0)),
            1
        );
        assert_eq!(
            per_pilot(&shape(4, u64::MAX, u32::MAX), &task(1, gib, 1)),
            4
        );
    }
}
