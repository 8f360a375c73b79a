//! The HTML report: one self-contained page (inline CSS and SVG, no script,
//! nothing fetched) that opens offline in any browser.
//!
//! Sections: the summary, workers and scaling events, the Gantt chart per
//! agent (`gantt`), cpu and memory utilisation (capacity, requested, used),
//! queue depth, agents and pilots over time (`series`), desired against
//! actual pilots, queue wait per pilot and idle pilot-seconds (`scaling`),
//! per-job box plots
//! against the request (`boxplot`), the per-job breakdown, failures with
//! their stderr tails, pilots, scaling decisions, events (`tables`), and
//! predicted vs actual (`predicted`: the advisor's figures and scatter). Size is bounded whatever the run: the Gantt chart bins
//! above `GANTT_BARS_MAX` attempts, series have a fixed number of bins, and
//! tables carry at most a fixed number of rows.
//!
//! Pure: data and figures in, a `String` out. Must not compute the summary.

mod boxplot;
mod gantt;
mod predicted;
mod scaling;
mod series;
mod svg;
mod tables;

pub use gantt::GANTT_BARS_MAX;

use std::fmt::Write;

use super::model::ReportData;
use super::summary::Summary;
use series::Timeline;
use svg::{esc, Series, Unit};

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#222;background:#fff;max-width:1140px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:14px;margin:14px 0 4px}
.meta{color:#555;font-size:13px}.note,.none{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:110px;font-size:12px;color:#555}
.card b{display:block;font-size:17px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f4f5f7}
pre{white-space:pre-wrap;max-width:520px;max-height:240px;overflow:auto;font-size:11px;margin:4px 0}
.chip{color:#fff;border-radius:3px;padding:1px 5px;font-size:11px}
svg{display:block;margin:4px 0}svg text{font-size:11px;fill:#333}svg .al{font-size:12px;fill:#111}svg .lg{font-size:11px}
svg .axis{stroke:#555}svg .tick{stroke:#555}svg .grid{stroke:#e6e6e6}
"#;

pub fn render(d: &ReportData, s: &Summary) -> String {
    let t = Timeline::of(d);
    let mut out = String::with_capacity(64 << 10);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run {} ({}): report</title><style>{STYLE}</style></head><body>",
        d.run.id,
        esc(&d.run.name)
    );
    let _ = write!(
        out,
        r#"<h1>Run {} ({}): {}</h1><p class="meta">Submitted {}; {} attempts on {} agent{}. Times are seconds since submit.</p>"#,
        d.run.id,
        esc(&d.run.name),
        esc(&d.run.state),
        crate::output::format_utc(d.run.submitted_at_ms),
        d.attempts.len(),
        d.agents.len(),
        if d.agents.len() == 1 { "" } else { "s" }
    );
    section(&mut out, "Summary", &tables::summary(d, s));
    section(&mut out, "Workers", &tables::workers(s));
    section(
        &mut out,
        "Attempts per agent (Gantt)",
        &gantt_section(d, &t),
    );
    section(&mut out, "Utilisation", &utilisation(d, &t));
    section(&mut out, "Queue", &queue(d, &t));
    section(&mut out, "Agents and pilots", &fleet(d, &t));
    section(&mut out, "Scaling", &scaling::render(d, &t));
    section(
        &mut out,
        "Per job: run time, memory and cpu against the request",
        &boxplot::render(d),
    );
    section(&mut out, "Per job breakdown", &tables::jobs(&s.jobs));
    section(&mut out, "Failures", &tables::failures(d, s));
    section(&mut out, "Pilots", &tables::pilots(d));
    section(&mut out, "Scaling decisions", &tables::scaling_decisions(d));
    section(
        &mut out,
        "Predicted vs actual",
        &predicted::render(d, &s.accountability),
    );
    section(&mut out, "Events", &tables::events(d));
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, title: &str, body: &str) {
    let _ = write!(out, "<section><h2>{}</h2>{body}</section>", esc(title));
}

fn gantt_section(d: &ReportData, t: &Timeline) -> String {
    let note = if d.attempts.len() > GANTT_BARS_MAX {
        format!(
            "{} attempts: more than {GANTT_BARS_MAX}, so each agent's lane shows the share of its cpus running attempts (green height), attempts waiting (grey strip) and the most frequent failure (top mark) per time bin.",
            d.attempts.len()
        )
    } else {
        "One bar per attempt on its agent's lane, coloured by how it ended; grey before it is its queue wait (from ready, or from its assignment to the agent). Hover a bar for its task and numbers.".into()
    };
    format!(
        r#"<p class="note">{}</p>{}"#,
        esc(&note),
        gantt::render(d, t)
    )
}

fn utilisation(d: &ReportData, t: &Timeline) -> String {
    let u = series::utilisation(d, t);
    let used = if u.sampled {
        "used (sampled)"
    } else {
        "used (mean per attempt)"
    };
    let mem_used = if u.sampled {
        "RSS (sampled)"
    } else {
        "peak RSS (upper bound)"
    };
    let cpu = svg::step_chart(
        "Cpu over time",
        "cpus",
        Unit::Plain,
        t.span_s(),
        &[
            Series {
                name: "agents' cpus",
                colour: "#7f8c8d",
                dashed: true,
                values: u.cpu_capacity,
            },
            Series {
                name: "requested by running attempts",
                colour: "#5b8def",
                dashed: false,
                values: u.cpu_requested,
            },
            Series {
                name: used,
                colour: "#e67e22",
                dashed: false,
                values: u.cpu_used,
            },
        ],
    );
    let mem = svg::step_chart(
        "Memory over time",
        "memory",
        Unit::Bytes,
        t.span_s(),
        &[
            Series {
                name: "agents' memory",
                colour: "#7f8c8d",
                dashed: true,
                values: u.mem_capacity,
            },
            Series {
                name: "requested by running attempts",
                colour: "#5b8def",
                dashed: false,
                values: u.mem_requested,
            },
            Series {
                name: mem_used,
                colour: "#8e44ad",
                dashed: false,
                values: u.mem_used,
            },
        ],
    );
    format!("<h3>Cpu: allocated against used</h3>{cpu}<h3>Memory: allocated against used</h3>{mem}")
}

fn queue(d: &ReportData, t: &Timeline) -> String {
    let (waiting, running) = series::queue(d, t);
    svg::step_chart(
        "Queue depth over time",
        "attempts",
        Unit::Plain,
        t.span_s(),
        &[
            Series {
                name: "waiting to start",
                colour: "#95a5a6",
                dashed: false,
                values: waiting,
            },
            Series {
                name: "running",
                colour: "#3a9b5c",
                dashed: false,
                values: running,
            },
        ],
    )
}

fn fleet(d: &ReportData, t: &Timeline) -> String {
    let [agents, queued, connected] = series::fleet(d, t);
    svg::step_chart(
        "Agents and pilots over time",
        "count",
        Unit::Plain,
        t.span_s(),
        &[
            Series {
                name: "agents connected",
                colour: "#2c3e50",
                dashed: false,
                values: agents,
            },
            Series {
                name: "pilots queued",
                colour: "#e67e22",
                dashed: true,
                values: queued,
            },
            Series {
                name: "pilots connected",
                colour: "#3a9b5c",
                dashed: true,
                values: connected,
            },
        ],
    )
}
