//! Samples read from the store: every attempt that ended in success or in a
//! memory kill, with its job's task type (the manifest task binding, else
//! the job name), tag, target (its agent's pilot's, else `local`) and the
//! task's features (the job's `features:` templates rendered for the task,
//! from the run's stored definition, and `input_bytes`: its declared
//! inputs' total size when it declares any), and what an advisor had it
//! ask for, if one sized it.
//!
//! Runs on a blocking thread with its own read-only connection (WAL lets it
//! read beside the writer); it must never run on the core or on the store's
//! writer thread, and it writes nothing. The one SQL outside `store`: a read
//! of the telemetry the advisors own the meaning of.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::sample::{features_of, Feature, Outcome, Sample};
use crate::core::PlannedJob;
use crate::submit;

/// The newest attempts read at most: training stays bounded in time and
/// memory whatever the history (about 10 s of training for the slowest
/// model at this size).
pub const SAMPLES_MAX: usize = 100_000;

const QUERY: &str = "
SELECT a.run_id, a.job_id, a.idx, a.end_class, a.peak_rss_bytes, a.cpu_time_us,
       a.started_at_us, a.ended_at_us, j.name, j.tag, p.target,
       a.input_bytes, a.request_source, a.memory_bytes
FROM attempts a
JOIN jobs j ON j.id = a.job_id
LEFT JOIN agents g ON g.id = a.agent_id
LEFT JOIN pilots p ON p.id = g.pilot_id
WHERE a.end_class IN ('SUCCESS', 'MEMORY_EXHAUSTION')
ORDER BY a.id DESC
LIMIT ?1";

/// The feature the declared inputs' total size is learned and asked as.
pub const INPUT_BYTES: &str = "input_bytes";

/// Opens the store read-only.
pub fn open(db: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot read {}: {e}", db.display()))
}

/// A run's planned jobs by name (from its stored definition).
pub(crate) type RunJobs = HashMap<String, PlannedJob>;

/// Every sample in the store, newest first, at most `SAMPLES_MAX`.
pub fn load(c: &Connection) -> Result<Vec<Sample>, String> {
    let err = |e: rusqlite::Error| format!("reading the attempts failed: {e}");
    let mut stmt = c.prepare(QUERY).map_err(err)?;
    let mut rows = stmt.query([SAMPLES_MAX as i64]).map_err(err)?;
    let mut runs: HashMap<u64, Option<RunJobs>> = HashMap::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let run = r.get::<_, i64>(0).map_err(err)? as u64;
        let idx = r.get::<_, i64>(2).map_err(err)? as u64;
        let end: String = r.get(3).map_err(err)?;
        let name: String = r.get(8).map_err(err)?;
        let opt_u64 = |i: usize| {
            r.get::<_, Option<i64>>(i)
                .map(|v| v.map(|v| v.max(0) as u64))
        };
        let jobs = match runs.get(&run) {
            Some(j) => j,
            None => {
                let j = run_jobs(c, run);
                runs.entry(run).or_insert(j)
            }
        };
        let planned = jobs.as_ref().and_then(|j| j.get(&name));
        let task_type = planned
            .and_then(|p| p.def.task.clone())
            .unwrap_or_else(|| name.clone());
        let mut features = planned
            .and_then(|p| p.templates.features(&p.def, idx, run).ok())
            .map(|pairs| features_of(&pairs))
            .unwrap_or_default();
        if let Some(bytes) = opt_u64(11).map_err(err)? {
            // The declared inputs' size, as the dispatch sees it (`auto`).
            features
                .entry(INPUT_BYTES.to_string())
                .or_insert(Feature::Number(bytes as f64));
        }
        // Any advice that was used counts, the percentile's too: a learned
        // advisor set aside comes back once the advice that replaced it
        // kept its word for a window (a probation, not a life sentence).
        let source: Option<String> = r.get(12).map_err(err)?;
        let advised = source.as_deref() == Some("advisor");
        out.push(Sample {
            task_type,
            tag: r.get(9).map_err(err)?,
            target: r
                .get::<_, Option<String>>(10)
                .map_err(err)?
                .unwrap_or_else(|| "local".into()),
            run,
            features,
            peak_memory_bytes: opt_u64(4).map_err(err)?,
            cpu_time_us: opt_u64(5).map_err(err)?,
            started_at_us: opt_u64(6).map_err(err)?,
            ended_at_us: opt_u64(7).map_err(err)?,
            outcome: if end == "SUCCESS" {
                Outcome::Succeeded
            } else {
                Outcome::MemoryKilled
            },
            advised_memory_bytes: opt_u64(13).map_err(err)?.filter(|_| advised),
        });
    }
    Ok(out)
}

/// A run's jobs by name; `None` when its definition cannot be read (its
/// attempts still count, by job name and without features).
pub(crate) fn run_jobs(c: &Connection, run: u64) -> Option<RunJobs> {
    let (definition, source): (String, String) = c
        .query_row(
            "SELECT definition, source FROM runs WHERE id = ?1",
            [run as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()?;
    let (_, planned) = submit::replan(&definition, &source).ok()?;
    Some(
        planned
            .into_iter()
            .map(|p| (p.def.name.clone(), p))
            .collect(),
    )
}
