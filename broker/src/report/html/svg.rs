//! SVG building blocks the HTML report's charts share: escaping, a linear
//! scale with round ticks, axes with labels, a legend, the colour of each
//! way an attempt can end, and a step-line chart of binned series.
//!
//! Pure string building; it must not know the report's data.

use std::fmt::Write;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The colour an attempt's end is drawn in (a plain match table).
pub fn class_colour(class: Option<&str>) -> &'static str {
    match class {
        Some("SUCCESS") => "#3a9b5c",
        Some("EXIT_CODE") => "#d64541",
        Some("MEMORY_EXHAUSTION") => "#8e44ad",
        Some("TIMEOUT") => "#e67e22",
        Some("SIGNALED") => "#a93226",
        Some("INVALID_INPUT") => "#e84393",
        Some("OUTPUTS_MISSING") => "#c0392b",
        Some("SPAWN_FAILED") => "#7f1d1d",
        Some("AGENT_LOST") => "#6d4c41",
        Some("DRAINED") | Some("RETURNED") => "#95a5a6",
        Some("CANCELLED") => "#bdc3c7",
        Some(_) => "#34495e",
        None => "#3498db",
    }
}

/// Maps a domain interval onto pixels.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Scale {
        let d1 = if d1 > d0 { d1 } else { d0 + 1.0 };
        Scale { d0, d1, r0, r1 }
    }

    pub fn at(&self, v: f64) -> f64 {
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }

    /// Round tick values inside the domain (about `n` of them): 1, 2 or 5
    /// times a power of ten, or for bytes a power of two.
    pub fn ticks(&self, n: usize, unit: Unit) -> Vec<f64> {
        let span = self.d1 - self.d0;
        let raw = span / n.max(1) as f64;
        let step = match unit {
            Unit::Bytes if raw >= 1.0 => 2f64.powf(raw.log2().ceil()),
            _ => {
                let mag = 10f64.powf(raw.log10().floor());
                [1.0, 2.0, 5.0, 10.0]
                    .into_iter()
                    .map(|m| m * mag)
                    .find(|s| *s >= raw)
                    .unwrap_or(10.0 * mag)
            }
        };
        let mut t = (self.d0 / step).ceil() * step;
        let mut out = Vec::new();
        while t <= self.d1 + step * 1e-9 && out.len() < 50 {
            out.push(t);
            t += step;
        }
        out
    }
}

/// What an axis counts: plain numbers, or bytes (ticks on powers of two,
/// labels with a unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Plain,
    Bytes,
}

impl Unit {
    pub fn label(self, v: f64) -> String {
        match self {
            Unit::Plain => num(v),
            Unit::Bytes => bytes(v),
        }
    }
}

/// A number for a tick label: no needless decimals.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// Bytes for a tick label.
pub fn bytes(v: f64) -> String {
    if v <= 0.0 {
        return "0".into();
    }
    scalable_common::units::format_size(v as u64)
}

/// The plot area of a chart inside its SVG.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    pub fn x0(&self) -> f64 {
        self.left
    }
    pub fn x1(&self) -> f64 {
        self.width - self.right
    }
    pub fn y0(&self) -> f64 {
        self.height - self.bottom
    }
    pub fn y1(&self) -> f64 {
        self.top
    }
}

/// Opens an SVG with a title for screen readers.
pub fn open(out: &mut String, f: &Frame, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>{t}</title>"#,
        w = f.width,
        h = f.height,
        t = esc(title)
    );
}

/// The x axis along the bottom of the frame, with its label.
pub fn x_axis(out: &mut String, f: &Frame, x: &Scale, label: &str, unit: Unit) {
    let y = f.y0();
    let _ = write!(
        out,
        r#"<line class="axis" x1="{}" y1="{y}" x2="{}" y2="{y}"/>"#,
        f.x0(),
        f.x1()
    );
    for t in x.ticks(8, unit) {
        let px = x.at(t);
        let _ = write!(
            out,
            r#"<line class="tick" x1="{px:.1}" y1="{y}" x2="{px:.1}" y2="{}"/><text class="tl" x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
            y + 4.0,
            y + 16.0,
            esc(&unit.label(t))
        );
    }
    let _ = write!(
        out,
        r#"<text class="al" x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (f.x0() + f.x1()) / 2.0,
        f.height - 4.0,
        esc(label)
    );
}

/// The y axis along the left of the frame, with grid lines and its label.
pub fn y_axis(out: &mut String, f: &Frame, y: &Scale, label: &str, unit: Unit) {
    let _ = write!(
        out,
        r#"<line class="axis" x1="{x}" y1="{}" x2="{x}" y2="{}"/>"#,
        f.y0(),
        f.y1(),
        x = f.x0()
    );
    for t in y.ticks(5, unit) {
        let py = y.at(t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{}" y1="{py:.1}" x2="{}" y2="{py:.1}"/><text class="tl" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            f.x0(),
            f.x1(),
            f.x0() - 4.0,
            py + 4.0,
            esc(&unit.label(t))
        );
    }
    let (cx, cy) = (14.0, (f.y0() + f.y1()) / 2.0);
    let _ = write!(
        out,
        r#"<text class="al" x="{cx}" y="{cy}" text-anchor="middle" transform="rotate(-90 {cx} {cy})">{}</text>"#,
        esc(label)
    );
}

/// One legend entry: a swatch (filled, or a dashed line) and its name.
pub struct Key<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub dashed: bool,
}

/// A legend in one row above the plot area.
pub fn legend(out: &mut String, f: &Frame, keys: &[Key<'_>]) {
    let mut x = f.x0();
    let y = f.top - 10.0;
    for k in keys {
        if k.dashed {
            let _ = write!(
                out,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2" stroke-dasharray="4 3"/>"#,
                x + 16.0,
                k.colour
            );
        } else {
            let _ = write!(
                out,
                r#"<rect class="key" x="{x}" y="{}" width="16" height="10" fill="{}"/>"#,
                y - 5.0,
                k.colour
            );
        }
        let _ = write!(
            out,
            r#"<text class="lg" x="{}" y="{}">{}</text>"#,
            x + 20.0,
            y + 4.0,
            esc(k.name)
        );
        x += 28.0 + 7.0 * k.name.chars().count() as f64;
    }
}

/// A series of time-weighted bin means to draw as a step line.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub dashed: bool,
    pub values: Vec<f64>,
}

/// A step-line chart of binned series over the run's time (seconds since
/// submit), with axes, labels and a legend.
pub fn step_chart(
    title: &str,
    y_label: &str,
    y_unit: Unit,
    span_s: f64,
    series: &[Series<'_>],
) -> String {
    let f = Frame {
        width: 1100.0,
        height: 240.0,
        left: 80.0,
        right: 20.0,
        top: 34.0,
        bottom: 40.0,
    };
    let max_of = |s: &Series<'_>| s.values.iter().copied().fold(0.0f64, f64::max);
    let solid_max = series
        .iter()
        .filter(|s| !s.dashed)
        .map(max_of)
        .fold(0.0f64, f64::max);
    // A dashed line is context (a capacity): far above the rest it would
    // flatten them, so it is clipped at the top and its legend says so.
    let off_scale = |s: &Series<'_>| s.dashed && solid_max > 0.0 && max_of(s) > 4.0 * solid_max;
    let y_max = series
        .iter()
        .filter(|s| !off_scale(s))
        .map(max_of)
        .fold(0.0f64, f64::max);
    let x = Scale::new(0.0, span_s, f.x0(), f.x1());
    let y = Scale::new(0.0, (y_max * 1.1).max(1e-9), f.y0(), f.y1());
    let mut out = String::new();
    open(&mut out, &f, title);
    y_axis(&mut out, &f, &y, y_label, y_unit);
    x_axis(&mut out, &f, &x, "time since submit (s)", Unit::Plain);
    let names: Vec<String> = series
        .iter()
        .map(|s| match off_scale(s) {
            true => format!("{} (off scale: {})", s.name, y_unit.label(max_of(s))),
            false => s.name.to_string(),
        })
        .collect();
    let keys: Vec<Key<'_>> = series
        .iter()
        .zip(&names)
        .map(|(s, name)| Key {
            name,
            colour: s.colour,
            dashed: s.dashed,
        })
        .collect();
    legend(&mut out, &f, &keys);
    for s in series {
        let points = step_points(&s.values, &x, &y, span_s, y_max);
        let dash = if s.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<polyline class="series" fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
            s.colour,
            points.trim_end()
        );
    }
    out.push_str("</svg>");
    out
}

/// The points of a step line through binned `values`: one only where the
/// value changes; values far above `y_max` are clipped at the top.
fn step_points(values: &[f64], x: &Scale, y: &Scale, span_s: f64, y_max: f64) -> String {
    let n = values.len().max(1) as f64;
    let top = y_max * 1.1;
    let mut points = String::new();
    let mut last: Option<f64> = None;
    for (i, v) in values.iter().enumerate() {
        if last.is_some_and(|l| (l - v).abs() <= y_max * 1e-4) {
            continue;
        }
        let xa = x.at(span_s * i as f64 / n);
        if let Some(l) = last {
            let _ = write!(points, "{xa:.1},{:.1} ", y.at(l.min(top)));
        }
        let _ = write!(points, "{xa:.1},{:.1} ", y.at(v.min(top)));
        last = Some(*v);
    }
    if let Some(l) = last {
        let _ = write!(points, "{:.1},{:.1}", x.at(span_s), y.at(l.min(top)));
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_markup() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn ticks_are_round_and_inside_the_domain() {
        let s = Scale::new(0.0, 97.0, 0.0, 100.0);
        let t = s.ticks(5, Unit::Plain);
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(s.at(97.0), 100.0);
        assert_eq!(
            Scale::new(5.0, 5.0, 0.0, 10.0).at(6.0),
            10.0,
            "an empty domain still draws"
        );
    }
}
