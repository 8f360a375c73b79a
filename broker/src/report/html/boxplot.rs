//! Per-job box plots (Nextflow's report): run time, peak RSS and cpu, one
//! horizontal box per job (min, quartiles, median, max), with the job's
//! request drawn on the same axis as a dashed line (walltime, memory,
//! cpus).
//!
//! Run time is over successful attempts, RSS and cpu over every attempt
//! that ran (so a memory kill shows against its request). Pure; it must not
//! compute the summary.

use std::fmt::Write;

use super::super::model::{AttemptRow, ReportData};
use super::super::summary::{by_job, cores_used, run_time_us};
use super::svg::{self, esc, Frame, Key, Scale, Unit};

const ROW_PX: f64 = 26.0;
const BOX_COLOUR: &str = "#5b8def";
const REQUEST_COLOUR: &str = "#d64541";

/// Five numbers of a sorted sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Five {
    pub min: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
}

/// Linear-interpolated quantiles of `values` (sorted here).
pub fn five(mut values: Vec<f64>) -> Option<Five> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    Some(Five {
        min: values[0],
        q1: q(0.25),
        median: q(0.5),
        q3: q(0.75),
        max: values[values.len() - 1],
    })
}

/// One job's sample and its request, in the panel's unit.
struct Row {
    job: String,
    five: Option<Five>,
    request: Option<f64>,
}

/// The three panels, one under the other.
pub fn render(d: &ReportData) -> String {
    let (mut time, mut rss, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    let by_job = by_job(d);
    for job in &d.jobs {
        let (t, r, c) = samples(by_job.get(&job.id).map_or(&[][..], Vec::as_slice));
        time.push(Row {
            job: job.name.clone(),
            five: five(t),
            request: job.walltime_ms.map(|w| w as f64 / 1000.0),
        });
        rss.push(Row {
            job: job.name.clone(),
            five: five(r),
            request: (job.memory_bytes > 0).then_some(job.memory_bytes as f64),
        });
        cpu.push(Row {
            job: job.name.clone(),
            five: five(c),
            request: (job.cpus > 0).then_some(job.cpus as f64),
        });
    }
    let mut out = String::new();
    out.push_str(&panel(
        "Run time per job (successful attempts)",
        "run time (s)",
        Unit::Plain,
        "walltime",
        &time,
    ));
    out.push_str(&panel(
        "Peak RSS per job",
        "peak RSS (process tree)",
        Unit::Bytes,
        "memory request",
        &rss,
    ));
    out.push_str(&panel(
        "Cpu per job",
        "cores used (cpu time / run time)",
        Unit::Plain,
        "cpus requested",
        &cpu,
    ));
    out
}

/// A job's run times (s, successes), peak RSS (bytes) and cores used.
fn samples(of_job: &[&AttemptRow]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut t, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for a in of_job {
        let Some(us) = run_time_us(a) else { continue };
        if a.end_class.as_deref() == Some("SUCCESS") {
            t.push(us as f64 / 1e6);
        }
        if let Some(p) = a.peak_rss_bytes {
            r.push(p as f64);
        }
        if let Some(used) = cores_used(a) {
            c.push(used);
        }
    }
    (t, r, c)
}

fn panel(title: &str, x_label: &str, unit: Unit, request: &str, rows: &[Row]) -> String {
    let f = Frame {
        width: 1100.0,
        height: rows.len().max(1) as f64 * ROW_PX + 34.0 + 40.0,
        left: 150.0,
        right: 20.0,
        top: 34.0,
        bottom: 40.0,
    };
    let max = rows
        .iter()
        .flat_map(|r| [r.five.map_or(0.0, |f| f.max), r.request.unwrap_or(0.0)])
        .fold(0.0f64, f64::max);
    let x = Scale::new(0.0, (max * 1.05).max(1e-9), f.x0(), f.x1());
    let mut out = format!("<h3>{}</h3>", esc(title));
    svg::open(&mut out, &f, title);
    svg::legend(
        &mut out,
        &f,
        &[
            Key {
                name: "min / quartiles / median / max",
                colour: BOX_COLOUR,
                dashed: false,
            },
            Key {
                name: request,
                colour: REQUEST_COLOUR,
                dashed: true,
            },
        ],
    );
    for (i, row) in rows.iter().enumerate() {
        let y = f.top + i as f64 * ROW_PX;
        let mid = y + ROW_PX / 2.0;
        let _ = write!(
            out,
            r#"<text class="tl" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.x0() - 6.0,
            mid + 4.0,
            esc(&row.job)
        );
        match row.five {
            Some(v) => box_into(&mut out, &x, v, y, unit),
            None => {
                let _ = write!(
                    out,
                    r#"<text class="tl" x="{}" y="{:.1}">no measurement</text>"#,
                    f.x0() + 6.0,
                    mid + 4.0
                );
            }
        }
        if let Some(req) = row.request {
            let px = x.at(req);
            let _ = write!(
                out,
                r#"<line class="request" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{REQUEST_COLOUR}" stroke-width="2" stroke-dasharray="4 3"><title>{request}: {}</title></line>"#,
                y + 2.0,
                y + ROW_PX - 2.0,
                esc(&unit.label(req))
            );
        }
    }
    svg::x_axis(&mut out, &f, &x, x_label, unit);
    out.push_str("</svg>");
    out
}

fn box_into(out: &mut String, x: &Scale, v: Five, y: f64, unit: Unit) {
    let fmt = |v: f64| unit.label(v);
    let (top, h) = (y + 5.0, ROW_PX - 10.0);
    let mid = y + ROW_PX / 2.0;
    let _ = write!(
        out,
        r#"<g class="box"><title>min {} / q1 {} / median {} / q3 {} / max {}</title><line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="{BOX_COLOUR}"/><rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{h}" fill="{BOX_COLOUR}" fill-opacity="0.35" stroke="{BOX_COLOUR}"/><line x1="{:.1}" y1="{top:.1}" x2="{:.1}" y2="{:.1}" stroke="{BOX_COLOUR}" stroke-width="2"/></g>"#,
        fmt(v.min),
        fmt(v.q1),
        fmt(v.median),
        fmt(v.q3),
        fmt(v.max),
        x.at(v.min),
        x.at(v.max),
        x.at(v.q1),
        (x.at(v.q3) - x.at(v.q1)).max(1.0),
        x.at(v.median),
        x.at(v.median),
        top + h
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_numbers_interpolate_quartiles() {
        let f = five(vec![4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!(
            f,
            Five {
                min: 1.0,
                q1: 2.0,
                median: 3.0,
                q3: 4.0,
                max: 5.0
            }
        );
        let g = five(vec![1.0, 2.0]).unwrap();
        assert_eq!((g.q1, g.median, g.q3), (1.25, 1.5, 1.75));
        assert_eq!(five(vec![]), None);
    }
}
