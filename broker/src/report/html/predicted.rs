//! The "Predicted vs actual" section: the advisor's accountability figures
//! beside the percentile's, a scatter of predicted memory bound against the
//! measured peak (one dot per advised attempt, and the percentile's bound
//! for the same attempt in grey; dots under the diagonal were covered), and
//! the table of every prediction.
//!
//! Pure: data and figures in, HTML out; it must not compute a figure
//! (`accountability` does).

use std::fmt::Write as _;

use super::super::accountability::{Accountability, Score, MEMORY, PERCENTILE};
use super::super::model::ReportData;
use super::svg::{self, esc, Frame, Key, Scale, Unit};
use super::tables;

/// Dots drawn at most per series (the table and the figures cover all).
const DOTS_MAX: usize = 2_000;
const ADVISED_COLOUR: &str = "#2980b9";
const PERCENTILE_COLOUR: &str = "#95a5a6";

pub fn render(d: &ReportData, a: &Accountability) -> String {
    let mut out = String::new();
    if !a.is_empty() {
        figures(&mut out, a);
        scatter(&mut out, d);
    }
    out.push_str(&tables::predictions(d));
    out
}

fn figures(out: &mut String, a: &Accountability) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
    let _ = write!(
        out,
        r#"<p class="note">{} attempts sized by the advisor ({} took their fallback). Coverage: the share whose peak stayed under the bound; over-allocation: mean (bound - peak) / peak; run-time error: mean |bound - run time| / run time.</p><table><tr><th>Sizing</th><th>Attempts</th><th>Coverage</th><th>Mean over-allocation</th><th>Run-time error</th></tr>"#,
        a.advised.attempts, a.fallbacks
    );
    let row = |out: &mut String, name: &str, s: &Score| {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            s.attempts,
            pct(s.coverage),
            pct(s.over_allocation),
            pct(s.run_time_error)
        );
    };
    row(out, "advisor", &a.advised);
    row(out, "percentile (same attempts)", &a.percentile);
    out.push_str("</table>");
}

/// Predicted memory bound (x) against measured peak (y).
fn scatter(out: &mut String, d: &ReportData) {
    let points = |advised: bool| -> Vec<(f64, f64)> {
        d.predictions
            .iter()
            .filter(|p| p.quantity == MEMORY)
            .filter(|p| {
                (p.method == PERCENTILE) != advised
                    && (!advised || p.method.starts_with("advisor: "))
            })
            .filter_map(|p| Some((p.predicted, p.actual?)))
            .take(DOTS_MAX)
            .collect()
    };
    let (advised, percentile) = (points(true), points(false));
    let max = advised
        .iter()
        .chain(&percentile)
        .map(|(p, a)| p.max(*a))
        .fold(0.0, f64::max);
    if max <= 0.0 {
        return;
    }
    let f = Frame {
        width: 560.0,
        height: 420.0,
        left: 80.0,
        right: 20.0,
        top: 34.0,
        bottom: 40.0,
    };
    let x = Scale::new(0.0, max * 1.05, f.x0(), f.x1());
    let y = Scale::new(0.0, max * 1.05, f.y0(), f.y1());
    svg::open(out, &f, "Predicted memory bound against measured peak");
    svg::x_axis(out, &f, &x, "predicted memory bound", Unit::Bytes);
    svg::y_axis(out, &f, &y, "measured peak", Unit::Bytes);
    let _ = write!(
        out,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="4 3"/>"##,
        x.at(0.0),
        y.at(0.0),
        x.at(max * 1.05),
        y.at(max * 1.05)
    );
    for (pts, colour) in [(&percentile, PERCENTILE_COLOUR), (&advised, ADVISED_COLOUR)] {
        for (p, a) in pts.iter() {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}" fill-opacity="0.7"><title>bound {}, peak {}</title></circle>"#,
                x.at(*p),
                y.at(*a),
                esc(&svg::bytes(*p)),
                esc(&svg::bytes(*a))
            );
        }
    }
    svg::legend(
        out,
        &f,
        &[
            Key {
                name: "advisor",
                colour: ADVISED_COLOUR,
                dashed: false,
            },
            Key {
                name: "percentile",
                colour: PERCENTILE_COLOUR,
                dashed: false,
            },
            Key {
                name: "peak = bound",
                colour: "#c0392b",
                dashed: true,
            },
        ],
    );
    out.push_str("</svg>");
}
