//! WAL checkpoints on their own thread, off the writer's critical path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, on the writer thread, copying the WAL into the database and
//! syncing it: about 6% of the writer's cpu at full dispatch speed, and a
//! stall for the replies waiting on that commit. Here the writer's connection
//! has `wal_autocheckpoint` off and a second connection runs a PASSIVE
//! checkpoint (which never waits on, nor blocks, the writer) at most every
//! [`PERIOD`] while commits go on. The writer still checkpoints with
//! TRUNCATE when it stops.
//!
//! Owns: that thread and its connection. It must not write rows.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::Connection;

/// How often, at most, the WAL is copied back while writes go on: a WAL of a
/// few MB at 150,000 tasks/s.
const PERIOD: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Shared {
    commits: AtomicU64,
    stop: AtomicBool,
}

/// The handle the writer keeps.
pub(super) struct Checkpoints {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the checkpointer for the database at `path`. When its connection
/// cannot be opened, `writer` keeps SQLite's automatic checkpoints (slower,
/// never wrong).
pub(super) fn start(writer: &Connection, path: &Path) -> Checkpoints {
    let shared = Arc::new(Shared::default());
    let thread = Connection::open(path)
        .and_then(|c| {
            c.execute_batch("PRAGMA busy_timeout=5000;")?;
            writer.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
            Ok(c)
        })
        .map_err(|e| {
            tracing::warn!("store: checkpoints stay on the writer thread: {e}");
        })
        .ok()
        .and_then(|conn| {
            let shared = shared.clone();
            thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || run(conn, &shared))
                .ok()
        });
    if thread.is_none() {
        let _ = writer.execute_batch("PRAGMA wal_autocheckpoint=1000;");
    }
    Checkpoints { shared, thread }
}

impl Checkpoints {
    /// Called after every commit: one relaxed increment, no wake-up.
    pub(super) fn committed(&self) {
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the thread (the writer's own TRUNCATE checkpoint follows).
    pub(super) fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, shared: &Shared) {
    let mut seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        thread::park_timeout(PERIOD);
        let now = shared.commits.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            // A busy or failed checkpoint is retried on the next period; the
            // WAL only grows meanwhile.
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                tracing::debug!("store: checkpoint deferred: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_checkpointed_by_the_thread_not_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x BLOB);")
            .unwrap();
        let cp = start(&writer, &path);
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "the writer no longer checkpoints by itself");
        for _ in 0..50 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                .unwrap();
            cp.committed();
        }
        // Only a checkpoint moves pages into the database file itself (the
        // writer does not, and nothing else is open): it grows past the rows.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            thread::sleep(PERIOD);
            let size = std::fs::metadata(&path).unwrap().len();
            if size > 50 * 8000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never checkpointed: the database file is {size} bytes"
            );
        }
        cp.stop();
    }
}
