//! Quantities over the run's time as time-weighted means per bin: cpu and
//! memory (capacity of the agents, requested by running attempts, used),
//! the queue (attempts waiting, running) and the fleet (agents connected,
//! pilots queued and connected).
//!
//! Each interval is added in O(1) plus its two partial bins (a difference
//! array carries the whole bins between), so a million attempts cost one
//! pass. Pure; it must not draw.

use super::super::model::{AttemptRow, ReportData};
use super::super::summary::{end_ms, wait_from_ms};

/// Bins of every time series.
pub const BINS: usize = 400;

/// Time-weighted means of one quantity per bin of [`Timeline`].
pub struct Binned {
    partial: Vec<f64>,
    diff: Vec<f64>,
    t0_ms: f64,
    bin_ms: f64,
}

impl Binned {
    pub fn new(t: &Timeline) -> Binned {
        Binned {
            partial: vec![0.0; t.bins],
            diff: vec![0.0; t.bins + 1],
            t0_ms: t.t0_ms as f64,
            bin_ms: t.bin_ms(),
        }
    }

    /// Adds `weight` over `[from_ms, to_ms)` (clipped to the timeline).
    pub fn add(&mut self, from_ms: f64, to_ms: f64, weight: f64) {
        let n = self.partial.len();
        let a = ((from_ms - self.t0_ms) / self.bin_ms).clamp(0.0, n as f64);
        let b = ((to_ms - self.t0_ms) / self.bin_ms).clamp(0.0, n as f64);
        if b <= a || weight == 0.0 {
            return;
        }
        let (ia, ib) = (a.floor() as usize, b.floor() as usize);
        if ia == ib {
            self.partial[ia.min(n - 1)] += weight * (b - a);
            return;
        }
        self.partial[ia] += weight * ((ia + 1) as f64 - a);
        if ib < n {
            self.partial[ib] += weight * (b - ib as f64);
        }
        self.diff[ia + 1] += weight;
        self.diff[ib] -= weight;
    }

    pub fn values(self) -> Vec<f64> {
        let mut run = 0.0;
        self.partial
            .iter()
            .zip(&self.diff)
            .map(|(p, d)| {
                run += d;
                p + run
            })
            .collect()
    }
}

/// The span the charts cover: from submit to the run's end.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub t0_ms: u64,
    pub t1_ms: u64,
    pub bins: usize,
}

impl Timeline {
    pub fn of(d: &ReportData) -> Timeline {
        let last_end = d
            .attempts
            .iter()
            .filter_map(|a| a.ended_at_us.map(|e| e / 1000))
            .max()
            .unwrap_or(0);
        let t0_ms = d.run.submitted_at_ms;
        let t1_ms = end_ms(d).max(last_end).max(t0_ms + 1);
        Timeline {
            t0_ms,
            t1_ms,
            bins: BINS,
        }
    }
    pub fn bin_ms(&self) -> f64 {
        (self.t1_ms - self.t0_ms) as f64 / self.bins as f64
    }
    pub fn span_s(&self) -> f64 {
        (self.t1_ms - self.t0_ms) as f64 / 1000.0
    }
}

/// When an attempt ran, in ms: start to end (or the timeline's end).
pub fn ran_ms(a: &AttemptRow, t: &Timeline) -> Option<(f64, f64)> {
    let s = a.started_at_us? as f64 / 1000.0;
    let e = a.ended_at_us.map_or(t.t1_ms as f64, |e| e as f64 / 1000.0);
    Some((s, e))
}

/// Capacity, requested and used, for cpus (cores) and memory (bytes).
pub struct Utilisation {
    pub cpu_capacity: Vec<f64>,
    pub cpu_requested: Vec<f64>,
    pub cpu_used: Vec<f64>,
    pub mem_capacity: Vec<f64>,
    pub mem_requested: Vec<f64>,
    pub mem_used: Vec<f64>,
    /// Whether "used" comes from usage series (else each attempt's mean cpu
    /// and its peak RSS over its whole run).
    pub sampled: bool,
}

pub fn utilisation(d: &ReportData, t: &Timeline) -> Utilisation {
    let [mut cc, mut cr, mut cu, mut mc, mut mr, mut mu] = std::array::from_fn(|_| Binned::new(t));
    for g in &d.agents {
        let to = g.left_at_ms.unwrap_or(t.t1_ms) as f64;
        cc.add(g.connected_at_ms as f64, to, g.cpus as f64);
        mc.add(g.connected_at_ms as f64, to, g.memory_bytes as f64);
    }
    let mut sampled = false;
    let requests: std::collections::BTreeMap<u64, (u32, u64)> = d
        .jobs
        .iter()
        .map(|j| (j.id, (j.cpus, j.memory_bytes)))
        .collect();
    for a in &d.attempts {
        let Some((s, e)) = ran_ms(a, t) else { continue };
        let (cpus, mem) = match &a.requested {
            Some(r) => (r.cpus, r.memory_bytes),
            None => requests.get(&a.job_id).copied().unwrap_or((0, 0)),
        };
        cr.add(s, e, cpus as f64);
        mr.add(s, e, mem as f64);
        match a.usage.as_deref() {
            Some(points) if points.len() >= 2 => {
                sampled = true;
                for w in points.windows(2) {
                    let (p, q) = (w[0], w[1]);
                    let dt_us = q.at_us.saturating_sub(p.at_us).max(1) as f64;
                    let cores = q.cpu_time_us.saturating_sub(p.cpu_time_us) as f64 / dt_us;
                    let (ps, qs) = (p.at_us as f64 / 1000.0, q.at_us as f64 / 1000.0);
                    cu.add(ps, qs, cores);
                    mu.add(ps, qs, q.rss_bytes as f64);
                }
            }
            _ => {
                if let Some(cores) = super::super::summary::cores_used(a) {
                    cu.add(s, e, cores);
                }
                if let Some(peak) = a.peak_rss_bytes {
                    mu.add(s, e, peak as f64);
                }
            }
        }
    }
    Utilisation {
        cpu_capacity: cc.values(),
        cpu_requested: cr.values(),
        cpu_used: cu.values(),
        mem_capacity: mc.values(),
        mem_requested: mr.values(),
        mem_used: mu.values(),
        sampled,
    }
}

/// Attempts waiting to start and running, per bin.
pub fn queue(d: &ReportData, t: &Timeline) -> (Vec<f64>, Vec<f64>) {
    let (mut waiting, mut running) = (Binned::new(t), Binned::new(t));
    for a in &d.attempts {
        let from = wait_from_ms(a) as f64;
        match ran_ms(a, t) {
            Some((s, e)) => {
                waiting.add(from, s, 1.0);
                running.add(s, e, 1.0);
            }
            None => {
                let to = a.ended_at_us.map_or(t.t1_ms as f64, |e| e as f64 / 1000.0);
                waiting.add(from, to, 1.0);
            }
        }
    }
    (waiting.values(), running.values())
}

/// Agents connected, pilots queued (submitted, not connected) and pilots
/// connected, per bin.
pub fn fleet(d: &ReportData, t: &Timeline) -> [Vec<f64>; 3] {
    let [mut agents, mut queued, mut connected] = std::array::from_fn(|_| Binned::new(t));
    let end = t.t1_ms as f64;
    for g in &d.agents {
        agents.add(
            g.connected_at_ms as f64,
            g.left_at_ms.map_or(end, |l| l as f64),
            1.0,
        );
    }
    for p in &d.pilots {
        let ended = p.ended_at_ms.map_or(end, |e| e as f64);
        let connected_at = p.connected_at_ms.map_or(ended, |c| c as f64);
        queued.add(p.submitted_at_ms as f64, connected_at, 1.0);
        connected.add(connected_at, ended, 1.0);
    }
    [agents.values(), queued.values(), connected.values()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bins: usize) -> Timeline {
        Timeline {
            t0_ms: 1000,
            t1_ms: 1000 + bins as u64 * 10,
            bins,
        }
    }

    #[test]
    fn an_interval_adds_its_time_weighted_share_to_each_bin() {
        let t = line(5);
        let mut b = Binned::new(&t);
        // 1015..1035: half of bin 1, all of bin 2, half of bin 3.
        b.add(1015.0, 1035.0, 2.0);
        b.add(1041.0, 1043.0, 5.0);
        let v = b.values();
        let want = [0.0, 1.0, 2.0, 1.0, 1.0];
        for (got, want) in v.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{v:?}");
        }
    }

    #[test]
    fn intervals_outside_the_timeline_are_clipped() {
        let t = line(2);
        let mut b = Binned::new(&t);
        b.add(0.0, 5000.0, 1.0);
        b.add(10.0, 20.0, 7.0);
        assert_eq!(b.values(), vec![1.0, 1.0]);
    }
}
