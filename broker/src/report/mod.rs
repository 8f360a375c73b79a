//! `scalable report`: a run's telemetry as text, JSON or one self-contained
//! HTML page (SPEC §10).
//!
//! Layout: `model` (the data, as the store holds it, and the page that
//! carries it on the wire), `load` (reads it from SQLite on the store's
//! thread, a page at a time), `summary` (the figures every format shows;
//! `accountability`: the advisor's predictions scored against the actuals),
//! and the renderers `text`, `json` and `html`. The broker loads, the CLI
//! assembles the pages and renders.
//!
//! Must not: render on the broker, or read the store anywhere but `load`.
//! Renderers are pure functions from data to a `String`.

pub mod accountability;
#[doc(hidden)]
pub mod fixtures;
pub mod html;
pub mod json;
pub mod load;
pub mod model;
pub mod summary;
pub mod text;

pub use model::{ReportChunk, ReportData, REPORT_FORMAT};
pub use summary::{summarize, Summary};

/// The formats `scalable report --format` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Html,
}

/// The report of `d` in `format`.
pub fn render(d: &ReportData, format: Format) -> String {
    let s = summarize(d);
    match format {
        Format::Text => text::render(d, &s),
        Format::Json => json::render(d, &s),
        Format::Html => html::render(d, &s),
    }
}
#[cfg(test)]
mod tests;
