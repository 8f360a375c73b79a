//! One attempt's usage over time: a bounded series of (time, cpu used, peak
//! RSS) points for the report's utilisation plot and the advisors.
//!
//! Owns the resolution rule: a point per `USAGE_INTERVAL_FIRST_MS` at first;
//! when the series would grow past [`USAGE_POINTS_MAX`], neighbouring points
//! merge pairwise and the interval doubles, so a day-long task keeps 128 to
//! 256 points. Pure: the watchdog feeds it samples, the reaper finishes it.
//! It must not read `/proc` or a clock itself.

use scalable_common::protocol::{UsagePoint, USAGE_POINTS_MAX};

/// The first interval of a series (the watchdog's telemetry tick).
pub const USAGE_INTERVAL_FIRST_MS: u64 = 1_000;
/// A series with fewer points than this is not sent: the attempt was short,
/// its totals (peak RSS, cpu time) say everything, and the store writes no
/// row for it.
pub const USAGE_POINTS_MIN: usize = 2;

#[derive(Debug, Clone)]
pub struct UsageSeries {
    interval_ms: u64,
    points: Vec<UsagePoint>,
    /// Start of the open interval.
    open_since_ms: u64,
    /// The largest RSS sampled in the open interval.
    open_rss_bytes: u64,
    /// Cumulative cpu time at the end of the last point.
    closed_cpu_ms: u64,
}

impl UsageSeries {
    /// An empty series of an attempt that started at `started_ms`.
    pub fn new(started_ms: u64) -> UsageSeries {
        UsageSeries {
            interval_ms: USAGE_INTERVAL_FIRST_MS,
            points: Vec::new(),
            open_since_ms: started_ms,
            open_rss_bytes: 0,
            closed_cpu_ms: 0,
        }
    }

    /// A sample at `at_ms`: the tree's cumulative cpu time and its RSS now.
    /// Closes the open interval when it is as long as the current interval.
    pub fn record(&mut self, at_ms: u64, cpu_total_ms: u64, rss_bytes: u64) {
        self.open_rss_bytes = self.open_rss_bytes.max(rss_bytes);
        if at_ms.saturating_sub(self.open_since_ms) >= self.interval_ms {
            self.close(at_ms, cpu_total_ms);
        }
    }

    fn close(&mut self, at_ms: u64, cpu_total_ms: u64) {
        // A process that died unwaited takes its cpu time with it: never negative.
        self.points.push(UsagePoint {
            at_ms,
            cpu_ms: cpu_total_ms.saturating_sub(self.closed_cpu_ms),
            rss_bytes: self.open_rss_bytes,
        });
        self.closed_cpu_ms = self.closed_cpu_ms.max(cpu_total_ms);
        self.open_since_ms = at_ms;
        self.open_rss_bytes = 0;
        if self.points.len() >= USAGE_POINTS_MAX {
            self.halve();
        }
    }

    /// Neighbours merge (cpu summed, RSS the larger, the later end) and the
    /// interval doubles.
    fn halve(&mut self) {
        let merged: Vec<UsagePoint> = self
            .points
            .chunks(2)
            .map(|pair| {
                let last = pair[pair.len() - 1];
                UsagePoint {
                    at_ms: last.at_ms,
                    cpu_ms: pair.iter().map(|p| p.cpu_ms).sum(),
                    rss_bytes: pair.iter().map(|p| p.rss_bytes).max().unwrap_or(0),
                }
            })
            .collect();
        self.points = merged;
        self.interval_ms = self.interval_ms.saturating_mul(2);
    }

    /// The series of an attempt that ended at `at_ms` having used
    /// `cpu_total_ms` (the reaper's exact total): the open interval closes
    /// with the rest, so the points sum to the total. Empty for a short one.
    pub fn finish(mut self, at_ms: u64, cpu_total_ms: u64) -> Vec<UsagePoint> {
        if self.points.len() + 1 < USAGE_POINTS_MIN {
            return Vec::new();
        }
        if at_ms > self.open_since_ms {
            self.close(at_ms, cpu_total_ms);
        }
        self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_attempt_has_no_series() {
        let s = UsageSeries::new(0);
        assert!(s.finish(500, 10).is_empty());
        let mut s = UsageSeries::new(0);
        s.record(400, 5, 100);
        assert!(s.finish(900, 10).is_empty(), "no interval closed");
    }

    #[test]
    fn points_sum_to_the_total_and_keep_the_peak() {
        let mut s = UsageSeries::new(10_000);
        s.record(10_500, 100, 7);
        s.record(11_000, 400, 5);
        s.record(12_000, 900, 9);
        let p = s.finish(12_300, 1_000);
        assert_eq!(
            p,
            vec![
                UsagePoint {
                    at_ms: 11_000,
                    cpu_ms: 400,
                    rss_bytes: 7
                },
                UsagePoint {
                    at_ms: 12_000,
                    cpu_ms: 500,
                    rss_bytes: 9
                },
                UsagePoint {
                    at_ms: 12_300,
                    cpu_ms: 100,
                    rss_bytes: 0
                },
            ]
        );
    }

    /// A day of one-second samples stays within the bound and covers the day
    /// evenly, with every cpu millisecond kept.
    #[test]
    fn a_day_long_attempt_keeps_a_few_hundred_points() {
        let day_ms = 86_400_000;
        let mut s = UsageSeries::new(0);
        let mut at = 0;
        while at < day_ms {
            at += 1_000;
            s.record(at, at / 2, 1 << 20);
        }
        let p = s.finish(day_ms, day_ms / 2);
        assert!((128..=USAGE_POINTS_MAX).contains(&p.len()), "{}", p.len());
        assert_eq!(p.iter().map(|x| x.cpu_ms).sum::<u64>(), day_ms / 2);
        assert_eq!(p.last().unwrap().at_ms, day_ms);
        let widest = p.windows(2).map(|w| w[1].at_ms - w[0].at_ms).max();
        assert_eq!(
            widest,
            Some(512_000),
            "2^9 s: the interval after 9 halvings"
        );
    }
}
