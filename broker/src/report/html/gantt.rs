//! The Gantt chart: one lane per agent over the run's time.
//!
//! Up to [`GANTT_BARS_MAX`] attempts every attempt is one bar (`class="bar"`,
//! coloured by how it ended, with a tooltip) on a row of its agent's lane,
//! its queue wait a grey bar before it. Above that a lane per agent shows
//! binned occupancy instead (running attempts over the agent's cpus per
//! bin, a grey strip for attempts waiting, a mark in the colour of the most
//! frequent failure in bins with failures): the page stays small and fast
//! at a million attempts. Past [`LANES_MAX`] agents, consecutive agents
//! share a lane.
//!
//! Pure string building from the data; it must not compute the summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::super::model::{AgentRow, AttemptRow, ReportData};
use super::super::summary::wait_from_ms;
use super::series::{ran_ms, Binned, Timeline};
use super::svg::{self, class_colour, esc, Frame, Key, Scale};

/// Attempts drawn one bar each; above, lanes are binned.
pub const GANTT_BARS_MAX: usize = 5_000;
/// Lanes at most; more agents share lanes.
pub const LANES_MAX: usize = 200;
/// Bins of a binned lane.
const LANE_BINS: usize = 300;
const ROW_PX: f64 = 9.0;
const ROW_PX_FEW: f64 = 16.0;
const FEW_ROWS: usize = 40;
const LANE_GAP_PX: f64 = 6.0;
const BINNED_LANE_PX: f64 = 22.0;

pub fn render(d: &ReportData, t: &Timeline) -> String {
    if d.attempts.len() <= GANTT_BARS_MAX {
        bars(d, t)
    } else {
        binned(d, t)
    }
}

fn frame(lanes_px: f64) -> Frame {
    Frame {
        width: 1100.0,
        height: lanes_px + 34.0 + 40.0,
        left: 150.0,
        right: 20.0,
        top: 34.0,
        bottom: 40.0,
    }
}

fn agent_label(g: Option<&AgentRow>, id: u64) -> String {
    match g {
        Some(g) if g.tags.is_empty() => g.name.clone(),
        Some(g) => format!("{} [{}]", g.name, g.tags.join(",")),
        None => format!("agent {id}"),
    }
}

/// Attempts by agent, in agent id order.
fn by_agent(d: &ReportData) -> BTreeMap<u64, Vec<&AttemptRow>> {
    let mut m: BTreeMap<u64, Vec<&AttemptRow>> = BTreeMap::new();
    for a in &d.attempts {
        m.entry(a.agent_id).or_default().push(a);
    }
    m
}

fn legend_keys(d: &ReportData) -> Vec<&str> {
    let mut classes: Vec<&str> = d
        .attempts
        .iter()
        .filter_map(|a| a.end_class.as_deref())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    classes
}

fn legend(out: &mut String, f: &Frame, d: &ReportData, wait: &str) {
    let classes = legend_keys(d);
    let mut keys = vec![Key {
        name: wait,
        colour: "#c8ccd0",
        dashed: false,
    }];
    keys.extend(classes.iter().map(|c| Key {
        name: c,
        colour: class_colour(Some(c)),
        dashed: false,
    }));
    if d.attempts.iter().any(|a| a.end_class.is_none()) {
        keys.push(Key {
            name: "still running",
            colour: class_colour(None),
            dashed: false,
        });
    }
    svg::legend(out, f, &keys);
}

/// Rows within a lane: each attempt on the first row free when it became
/// ready to start (greedy interval packing).
fn rows_of(attempts: &[&AttemptRow], t: &Timeline) -> Vec<usize> {
    let mut order: Vec<usize> = (0..attempts.len()).collect();
    order.sort_by_key(|&i| (wait_from_ms(attempts[i]), attempts[i].id));
    let mut row_end: Vec<f64> = Vec::new();
    let mut rows = vec![0; attempts.len()];
    for i in order {
        let a = attempts[i];
        let from = wait_from_ms(a) as f64;
        let to = ran_ms(a, t).map_or(from, |(_, e)| e);
        let row = match row_end.iter().position(|&end| end <= from) {
            Some(r) => r,
            None => {
                row_end.push(0.0);
                row_end.len() - 1
            }
        };
        row_end[row] = to.max(from + 1.0);
        rows[i] = row;
    }
    rows
}

fn bars(d: &ReportData, t: &Timeline) -> String {
    let lanes = by_agent(d);
    let packed: Vec<(u64, Vec<&AttemptRow>, Vec<usize>)> = lanes
        .into_iter()
        .map(|(id, v)| {
            let rows = rows_of(&v, t);
            (id, v, rows)
        })
        .collect();
    let n_rows: usize = packed
        .iter()
        .map(|(_, _, r)| r.iter().max().map_or(1, |m| m + 1))
        .sum();
    // Few rows get taller bars, so a small run reads at a glance.
    let row_px = if n_rows <= FEW_ROWS {
        ROW_PX_FEW
    } else {
        ROW_PX
    };
    let lanes_px = (n_rows as f64 * row_px + packed.len() as f64 * LANE_GAP_PX).max(row_px);
    let f = frame(lanes_px);
    let x = Scale::new(0.0, t.span_s(), f.x0(), f.x1());
    let at = |ms: f64| x.at((ms - t.t0_ms as f64) / 1000.0);
    let mut out = String::new();
    svg::open(&mut out, &f, "Gantt chart: attempts per agent");
    legend(&mut out, &f, d, "queue wait");
    let mut y = f.top;
    for (agent_id, attempts, rows) in &packed {
        let label = agent_label(d.agents.iter().find(|g| g.id == *agent_id), *agent_id);
        let n_rows = rows.iter().max().map_or(1, |m| m + 1) as f64;
        let _ = write!(
            out,
            r#"<text class="tl" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.x0() - 6.0,
            y + n_rows * row_px / 2.0 + 4.0,
            esc(&label)
        );
        for (a, row) in attempts.iter().zip(rows) {
            bar(&mut out, d, a, (y + *row as f64 * row_px, row_px), &at, t);
        }
        y += n_rows * row_px + LANE_GAP_PX;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{}" y1="{:.1}" x2="{}" y2="{:.1}"/>"#,
            f.x0(),
            y - LANE_GAP_PX / 2.0,
            f.x1(),
            y - LANE_GAP_PX / 2.0
        );
    }
    svg::x_axis(&mut out, &f, &x, "time since submit (s)", svg::Unit::Plain);
    out.push_str("</svg>");
    out
}

/// One attempt: its wait (grey) and its bar, with a tooltip.
fn bar(
    out: &mut String,
    d: &ReportData,
    a: &AttemptRow,
    (y, row_px): (f64, f64),
    at: &dyn Fn(f64) -> f64,
    t: &Timeline,
) {
    let from = wait_from_ms(a) as f64;
    let (start, end) = ran_ms(a, t).unwrap_or_else(|| {
        let e = a.ended_at_us.map_or(t.t1_ms as f64, |e| e as f64 / 1000.0);
        (e, e)
    });
    let h = row_px - 2.0;
    if start > from {
        let _ = write!(
            out,
            r##"<rect class="wait" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h}" fill="#c8ccd0"/>"##,
            at(from),
            (at(start) - at(from)).max(0.5)
        );
    }
    let job = d.job(a.job_id).map_or("?", |j| j.name.as_str());
    let class = a.end_class.as_deref().unwrap_or("running");
    let rss = a.peak_rss_bytes.map_or(String::new(), |b| {
        format!(", peak {}", svg::bytes(b as f64))
    });
    let _ = write!(
        out,
        r#"<rect class="bar" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h}" fill="{}"><title>{}/{}/{} attempt {}: {} in {:.3} s after {:.3} s waiting{}</title></rect>"#,
        at(start),
        (at(end) - at(start)).max(2.0),
        class_colour(a.end_class.as_deref()),
        d.run.id,
        esc(job),
        a.index,
        a.number,
        class,
        (end - start) / 1000.0,
        (start - from).max(0.0) / 1000.0,
        rss
    );
}

/// A lane's figures per bin: running and waiting attempts, failures.
struct Lane<'a> {
    label: String,
    cpus: f64,
    attempts: Vec<&'a AttemptRow>,
}

fn lanes(d: &ReportData) -> Vec<Lane<'_>> {
    let by = by_agent(d);
    let per_lane = by.len().div_ceil(LANES_MAX).max(1);
    let groups: Vec<Vec<(u64, Vec<&AttemptRow>)>> = by
        .into_iter()
        .collect::<Vec<_>>()
        .chunks(per_lane)
        .map(|c| c.to_vec())
        .collect();
    groups
        .into_iter()
        .map(|group| {
            let agent = |id: u64| d.agents.iter().find(|g| g.id == id);
            let cpus: f64 = group
                .iter()
                .map(|(id, _)| agent(*id).map_or(1, |g| g.cpus.max(1)) as f64)
                .sum();
            let label = match group.as_slice() {
                [(id, _)] => agent_label(agent(*id), *id),
                [(first, _), .., (last, _)] => format!("agents {first}-{last}"),
                [] => String::new(),
            };
            Lane {
                label,
                cpus,
                attempts: group.into_iter().flat_map(|(_, v)| v).collect(),
            }
        })
        .collect()
}

fn binned(d: &ReportData, t: &Timeline) -> String {
    let lanes = lanes(d);
    let f = frame(lanes.len().max(1) as f64 * (BINNED_LANE_PX + LANE_GAP_PX));
    let x = Scale::new(0.0, t.span_s(), f.x0(), f.x1());
    let lane_t = Timeline {
        bins: LANE_BINS,
        ..*t
    };
    let bin_px = (f.x1() - f.x0()) / LANE_BINS as f64;
    let mut out = String::new();
    svg::open(&mut out, &f, "Gantt chart: agent lanes, binned");
    legend(&mut out, &f, d, "attempts waiting");
    for (i, lane) in lanes.iter().enumerate() {
        let y = f.top + i as f64 * (BINNED_LANE_PX + LANE_GAP_PX);
        let _ = write!(
            out,
            r#"<text class="tl" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.x0() - 6.0,
            y + BINNED_LANE_PX / 2.0 + 4.0,
            esc(&lane.label)
        );
        let (mut running, mut waiting) = (Binned::new(&lane_t), Binned::new(&lane_t));
        let mut failures: Vec<BTreeMap<&str, u32>> = vec![BTreeMap::new(); LANE_BINS];
        for a in &lane.attempts {
            let from = wait_from_ms(a) as f64;
            if let Some((s, e)) = ran_ms(a, t) {
                waiting.add(from, s, 1.0);
                running.add(s, e, 1.0);
            }
            if let (Some(class), Some(end)) = (a.end_class.as_deref(), a.ended_at_us) {
                if !matches!(class, "SUCCESS" | "RETURNED") {
                    let b = ((end as f64 / 1000.0 - t.t0_ms as f64) / lane_t.bin_ms()) as usize;
                    *failures[b.min(LANE_BINS - 1)].entry(class).or_default() += 1;
                }
            }
        }
        for (b, (run, wait)) in running
            .values()
            .into_iter()
            .zip(waiting.values())
            .enumerate()
        {
            let bx = f.x0() + b as f64 * bin_px;
            if wait > 0.0 {
                let o = (wait / lane.cpus).clamp(0.15, 1.0);
                let _ = write!(
                    out,
                    r##"<rect x="{bx:.1}" y="{:.1}" width="{:.2}" height="4" fill="#c8ccd0" fill-opacity="{o:.2}"/>"##,
                    y + BINNED_LANE_PX - 4.0,
                    bin_px
                );
            }
            if run > 0.0 {
                let h = (run / lane.cpus).min(1.0) * (BINNED_LANE_PX - 6.0);
                let _ = write!(
                    out,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{:.2}" height="{h:.1}" fill="{}"><title>{:.1} running, {:.1} waiting</title></rect>"#,
                    y + BINNED_LANE_PX - 4.0 - h,
                    bin_px,
                    class_colour(Some("SUCCESS")),
                    run,
                    wait
                );
            }
            if let Some((class, n)) = failures[b].iter().max_by_key(|(_, n)| **n) {
                let _ = write!(
                    out,
                    r#"<rect x="{bx:.1}" y="{y:.1}" width="{:.2}" height="4" fill="{}"><title>{n} {class}</title></rect>"#,
                    bin_px.max(2.0),
                    class_colour(Some(class))
                );
            }
        }
    }
    svg::x_axis(&mut out, &f, &x, "time since submit (s)", svg::Unit::Plain);
    out.push_str("</svg>");
    out
}
