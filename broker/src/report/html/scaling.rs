//! The scaler's section (issue 18): desired against actual pilots over the
//! run (what the work asked for, what the scaler set, how many pilots were
//! live), the queue wait of each pilot (one bar each), and the idle and busy
//! pilot-seconds and cost the decisions' outcomes recorded.
//!
//! Pure: the report data in, markup out; it must not compute the summary.

use std::fmt::Write;

use super::super::model::ReportData;
use super::series::{Binned, Timeline};
use super::svg::{self, esc, Frame, Scale, Series, Unit};

/// Pilots drawn in the queue-wait chart (the first ones submitted).
pub const WAIT_BARS_MAX: usize = 200;

pub fn render(d: &ReportData, t: &Timeline) -> String {
    if d.scaling_decisions.is_empty() {
        return r#"<p class="none">No scaling decisions were recorded during this run (the target has no adaptive: block, or the broker owns no pilots).</p>"#.into();
    }
    let mut out = cards(d);
    out.push_str(&desired_vs_actual(d, t));
    out.push_str(&queue_waits(d));
    out
}

/// Idle and busy pilot-seconds and cost, summed over the decisions that
/// started pilots (a removal's outcome counts pilots a start already did).
fn cards(d: &ReportData) -> String {
    let starts = d.scaling_decisions.iter().filter(|s| s.after > s.before);
    let (mut busy, mut idle, mut cost, mut priced) = (0.0, 0.0, 0.0, false);
    for s in starts {
        busy += s.busy_seconds.unwrap_or(0.0);
        idle += s.idle_seconds.unwrap_or(0.0);
        if let Some(c) = s.cost {
            cost += c;
            priced = true;
        }
    }
    let share = if busy + idle > 0.0 {
        format!("{:.0}%", idle * 100.0 / (busy + idle))
    } else {
        "-".into()
    };
    let mut out = String::from(r#"<div class="cards">"#);
    for (label, value) in [
        ("decisions", d.scaling_decisions.len().to_string()),
        ("idle pilot-seconds", format!("{idle:.0}")),
        ("busy pilot-seconds", format!("{busy:.0}")),
        ("idle share", share),
        (
            "cost of started pilots",
            if priced {
                format!("{cost:.2}")
            } else {
                "unknown".into()
            },
        ),
    ] {
        let _ = write!(
            out,
            r#"<div class="card"><b>{}</b>{}</div>"#,
            esc(&value),
            esc(label)
        );
    }
    out.push_str("</div>");
    out
}

fn desired_vs_actual(d: &ReportData, t: &Timeline) -> String {
    let end = t.t0_ms as f64 + t.bin_ms() * t.bins as f64;
    let (mut desired, mut set, mut live) = (Binned::new(t), Binned::new(t), Binned::new(t));
    // Before the run's first decision, the pilots it found.
    if let Some(first) = d.scaling_decisions.first() {
        let before = f64::from(first.before);
        desired.add(t.t0_ms as f64, first.at_ms as f64, before);
        set.add(t.t0_ms as f64, first.at_ms as f64, before);
    }
    let mut decisions = d.scaling_decisions.iter().peekable();
    while let Some(s) = decisions.next() {
        let until = decisions.peek().map_or(end, |n| n.at_ms as f64);
        desired.add(s.at_ms as f64, until, f64::from(s.desired));
        set.add(s.at_ms as f64, until, f64::from(s.after));
    }
    for p in &d.pilots {
        let to = p.ended_at_ms.map_or(end, |e| e as f64);
        live.add(p.submitted_at_ms as f64, to, 1.0);
    }
    svg::step_chart(
        "Desired against actual pilots",
        "pilots",
        Unit::Plain,
        t.span_s(),
        &[
            Series {
                name: "desired (the work, within bounds)",
                colour: "#8e44ad",
                dashed: true,
                values: desired.values(),
            },
            Series {
                name: "set by the scaler",
                colour: "#e67e22",
                dashed: false,
                values: set.values(),
            },
            Series {
                name: "live pilots",
                colour: "#3a9b5c",
                dashed: false,
                values: live.values(),
            },
        ],
    )
}

/// One bar per pilot: its queue wait (submitted to connected); a pilot that
/// never connected is drawn in grey up to its end.
fn queue_waits(d: &ReportData) -> String {
    let pilots: Vec<_> = d.pilots.iter().take(WAIT_BARS_MAX).collect();
    if pilots.is_empty() {
        return String::new();
    }
    let waits: Vec<(f64, bool)> = pilots
        .iter()
        .map(|p| match (p.connected_at_ms, p.ended_at_ms) {
            (Some(c), _) => (c.saturating_sub(p.submitted_at_ms) as f64 / 1000.0, true),
            (None, Some(e)) => (e.saturating_sub(p.submitted_at_ms) as f64 / 1000.0, false),
            (None, None) => (0.0, false),
        })
        .collect();
    let f = Frame {
        width: 1100.0,
        height: 200.0,
        left: 80.0,
        right: 20.0,
        top: 34.0,
        bottom: 40.0,
    };
    let max = waits.iter().map(|w| w.0).fold(0.0, f64::max);
    let y = Scale::new(0.0, (max * 1.1).max(1.0), f.y0(), f.y1());
    let x = Scale::new(0.0, pilots.len() as f64, f.x0(), f.x1());
    let mut out = String::new();
    svg::open(&mut out, &f, "Queue wait per pilot");
    svg::y_axis(&mut out, &f, &y, "queue wait (s)", Unit::Plain);
    svg::x_axis(
        &mut out,
        &f,
        &x,
        "pilot (in order of submission)",
        Unit::Plain,
    );
    let width = ((f.x1() - f.x0()) / pilots.len() as f64 * 0.8).max(1.0);
    for (i, (p, (w, connected))) in pilots.iter().zip(&waits).enumerate() {
        let (x0, y0) = (x.at(i as f64 + 0.1), y.at(*w));
        let colour = if *connected { "#3a9b5c" } else { "#aaaaaa" };
        let _ = write!(
            out,
            r#"<rect x="{x0:.1}" y="{y0:.1}" width="{width:.1}" height="{:.1}" fill="{colour}"><title>{}: {}</title></rect>"#,
            (f.y0() - y0).max(0.0),
            esc(&p.id),
            if *connected {
                format!("connected after {w:.1} s")
            } else {
                format!("never connected ({w:.1} s)")
            }
        );
    }
    out.push_str("</svg>");
    if d.pilots.len() > WAIT_BARS_MAX {
        let _ = write!(
            out,
            r#"<p class="note">The first {WAIT_BARS_MAX} of {} pilots.</p>"#,
            d.pilots.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::fixtures;
    use super::super::super::model::ScalingDecision;
    use super::*;

    #[test]
    fn decisions_draw_desired_against_actual_waits_and_idle_time() {
        let mut d = fixtures::small();
        let t0 = d.run.submitted_at_ms;
        assert!(render(&d, &Timeline::of(&d)).contains("No scaling decisions"));
        d.scaling_decisions = vec![
            ScalingDecision {
                at_ms: t0 + 10,
                before: 0,
                after: 2,
                desired: 2,
                reasoning: "*: 8 ready tasks ask for 2 pilots.".into(),
                busy_seconds: Some(6.0),
                idle_seconds: Some(2.0),
                cost: Some(0.25),
                ..ScalingDecision::default()
            },
            ScalingDecision {
                at_ms: t0 + 4_000,
                before: 2,
                after: 1,
                desired: 1,
                idle_seconds: Some(1.5),
                ..ScalingDecision::default()
            },
        ];
        let html = render(&d, &Timeline::of(&d));
        assert!(html.contains("<title>Desired against actual pilots</title>"));
        assert!(html.contains("<title>Queue wait per pilot</title>"));
        assert_eq!(
            html.matches("</rect>").count(),
            d.pilots.len(),
            "one bar per pilot"
        );
        // Idle time of started pilots only: the removal's is the same time.
        assert!(html.contains("<b>2</b>idle pilot-seconds"), "{html}");
        assert!(html.contains("<b>25%</b>idle share"));
        assert!(html.contains("<b>0.25</b>cost of started pilots"));
    }
}
