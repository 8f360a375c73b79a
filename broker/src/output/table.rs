//! Plain-text tables and the small number formats the tables share.
//!
//! Owns: `Table` (columns as wide as their widest cell, two spaces apart, no
//! trailing spaces), percentages and seconds with three decimals.
//!
//! Must not: know any response type; the topic modules fill the cells.

use std::borrow::Cow;

use super::escape::printable;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A text table: columns as wide as their widest cell, two spaces apart.
pub(crate) struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// A row; a cell's control characters are escaped (a cell is one line).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "table row width");
        let cells = cells
            .into_iter()
            .map(|c| match printable(&c) {
                Cow::Borrowed(_) => c,
                Cow::Owned(escaped) => escaped,
            })
            .collect();
        self.rows.push(cells);
    }

    /// The rendered lines, header first, without trailing newlines.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|cells| {
                let mut line = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let align = self.aligns.get(i).copied().unwrap_or(Align::Left);
                    if i > 0 {
                        line.push_str("  ");
                    }
                    match align {
                        Align::Left => line.push_str(&format!("{cell:<width$}")),
                        Align::Right => line.push_str(&format!("{cell:>width$}")),
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    pub(crate) fn render_into(&self, out: &mut String) {
        for line in self.lines() {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

/// `part` of `whole` as a percentage with `decimals` places; 0 of 0 is 0.
pub(crate) fn percent(part: u64, whole: u64, decimals: usize) -> String {
    let p = if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    };
    format!("{p:.decimals$}")
}

/// Milliseconds as seconds with three decimals (`1.250`), exact.
pub(crate) fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}
