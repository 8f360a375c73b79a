//! `scalable export RUN [--format jsonl] [--output DIR]`: a run's telemetry
//! rows as JSON lines (`docs/telemetry.md`), on stdout or, with `--output
//! DIR`, as the seeds' history layout `DIR/<run>/<table>.jsonl` (export into
//! `.scalable/runs` to build the directory the advisors read).
//!
//! Must not: build or change the rows (the broker's `telemetry` does); it
//! streams each page as it comes, so a run of a million attempts is never
//! held in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use scalable_common::exit::ExitCode;
use scalable_common::protocol::{Page, Request};

use super::refs::parse_run;
use super::request::ask;
use super::Context;
use crate::cli_error::CliError;
use crate::client::Client;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run: its id, or `last` for the newest.
    pub run: String,
    /// The format of the rows (JSON lines, one object per row).
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Write DIR/<run>/<table>.jsonl (run, jobs, tasks, attempts, usage,
    /// agents, pilots) instead of printing; e.g. `--output .scalable/runs`.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

/// The tables in the order their files are listed (and exported).
pub const TABLE_FILES: [(&str, &str); 7] = [
    ("run", "run.jsonl"),
    ("job", "jobs.jsonl"),
    ("task", "tasks.jsonl"),
    ("attempt", "attempts.jsonl"),
    ("usage", "usage.jsonl"),
    ("agent", "agents.jsonl"),
    ("pilot", "pilots.jsonl"),
];

pub async fn exec(ctx: &Context<'_>, args: ExportArgs) -> Result<ExitCode, CliError> {
    let client = Client::connect(ctx.access).await?;
    let run = parse_run(&args.run)?;
    let mut sink = match &args.output {
        Some(dir) => Sink::Dir(DirSink::new(dir)),
        None => Sink::Stdout(BufWriter::new(std::io::stdout().lock())),
    };
    let mut after: Option<u64> = None;
    loop {
        let req = Request::Export {
            run: run.clone(),
            after,
        };
        let page: Page<String> = ask(&client, &req).await?;
        for item in &page.items {
            sink.write(item)?;
        }
        match page.next {
            // Cursors only grow: a page that does not is a broken broker.
            Some(n) if after.is_some_and(|a| n <= a) => {
                return Err(CliError::failed(format!(
                    "the broker sent a page that does not advance (from {} to {n})",
                    after.unwrap_or_default()
                )));
            }
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if let Some(dir) = sink.finish()? {
        println!("{}", dir.display());
    }
    Ok(ExitCode::Ok)
}

/// Where the lines go.
enum Sink<'a> {
    Stdout(BufWriter<std::io::StdoutLock<'a>>),
    Dir(DirSink),
}

impl Sink<'_> {
    /// One page item: a line, or several lines of one table (usage).
    fn write(&mut self, item: &str) -> Result<(), CliError> {
        match self {
            Sink::Stdout(out) => out
                .write_all(item.as_bytes())
                .map_err(|e| CliError::failed(format!("cannot write to stdout: {e}"))),
            Sink::Dir(d) => d.write(item),
        }
    }

    /// Flushes; the run's directory when one was written.
    fn finish(self) -> Result<Option<PathBuf>, CliError> {
        match self {
            Sink::Stdout(mut out) => {
                out.flush()
                    .map_err(|e| CliError::failed(format!("cannot write to stdout: {e}")))?;
                Ok(None)
            }
            Sink::Dir(d) => d.finish().map(Some),
        }
    }
}

/// `DIR/<run>/<table>.jsonl`: the run's directory is named by the run row,
/// which comes first; every table's file exists, empty when it has no rows.
struct DirSink {
    root: PathBuf,
    run_dir: Option<PathBuf>,
    files: BTreeMap<&'static str, BufWriter<File>>,
}

impl DirSink {
    fn new(root: &Path) -> DirSink {
        DirSink {
            root: root.to_path_buf(),
            run_dir: None,
            files: BTreeMap::new(),
        }
    }

    fn write(&mut self, item: &str) -> Result<(), CliError> {
        for line in item.split_inclusive('\n') {
            let table = table_of(line).ok_or_else(|| {
                CliError::failed("the broker sent an export row without its table")
            })?;
            if self.run_dir.is_none() {
                self.open(line)?;
            }
            let Some(file) = self.files.get_mut(table) else {
                return Err(CliError::failed(format!(
                    "the broker sent rows of an unknown table {table:?} (are the cli and broker the same version?)"
                )));
            };
            file.write_all(line.as_bytes())
                .map_err(|e| CliError::failed(format!("cannot write the export: {e}")))?;
        }
        Ok(())
    }

    /// Creates `DIR/<run>/` and its files from the run row.
    fn open(&mut self, run_line: &str) -> Result<(), CliError> {
        let run = serde_json::from_str::<serde_json::Value>(run_line)
            .ok()
            .and_then(|v| v.get("run").and_then(|r| r.as_u64()))
            .ok_or_else(|| CliError::failed("the broker's export did not start with its run"))?;
        let dir = self.root.join(run.to_string());
        let io = |e: std::io::Error, p: &Path| {
            CliError::failed(format!("{}: {e}", p.display()))
                .with_hint("give --output a directory you can write")
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        for (table, name) in TABLE_FILES {
            let path = dir.join(name);
            let f = File::create(&path).map_err(|e| io(e, &path))?;
            self.files.insert(table, BufWriter::new(f));
        }
        self.run_dir = Some(dir);
        Ok(())
    }

    fn finish(self) -> Result<PathBuf, CliError> {
        for (_, mut f) in self.files {
            f.flush()
                .map_err(|e| CliError::failed(format!("cannot write the export: {e}")))?;
        }
        self.run_dir
            .ok_or_else(|| CliError::failed("the broker's export was empty"))
    }
}

/// The table a line names first (`{"table":"attempt",...}`).
fn table_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"table\":\"")?;
    rest.split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_broker_has_a_file() {
        assert_eq!(table_of(r#"{"table":"usage","attempt":1}"#), Some("usage"));
        assert_eq!(table_of("[]"), None);
        let names: Vec<&str> = TABLE_FILES.iter().map(|t| t.0).collect();
        let line = crate::telemetry::Line::Usage(crate::telemetry::UsageRow {
            attempt: 1,
            at_ms: 2,
            cpu_ms: 3,
            rss_bytes: 4,
        })
        .to_jsonl();
        assert!(names.contains(&table_of(&line).unwrap()), "{line}");
    }
}
