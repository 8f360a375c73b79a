//! `--telemetry-keep D`: the task that prunes old runs' telemetry detail
//! (`store::prune_telemetry` on the store's thread) at start, then every
//! `D / 2` (between a second and an hour), and at once again while a bounded
//! call leaves runs behind.
//!
//! Must not decide what is detail (the store's `retention` does) nor hold
//! the writer thread for long (each call is bounded).

use std::time::Duration;

use super::now_ms;
use crate::store::{self, Store};

/// Between calls while a backlog is pruned: commits go in between.
const BACKLOG_PAUSE: Duration = Duration::from_secs(1);

/// How often to look for runs that aged past `keep_ms`.
fn period(keep_ms: u64) -> Duration {
    Duration::from_millis((keep_ms / 2).clamp(1_000, 3_600_000))
}

/// Starts the pruning task when `--telemetry-keep` was given.
pub(super) fn start(keep_ms: Option<u64>, store: &Store) {
    if let Some(keep_ms) = keep_ms {
        tokio::spawn(run(store.clone(), keep_ms));
    }
}

async fn run(store: Store, keep_ms: u64) {
    loop {
        let now = now_ms();
        let before = now.saturating_sub(keep_ms);
        let pause = match store
            .query(move |c| store::prune_telemetry(c, before, now))
            .await
        {
            Ok(Ok(p)) => {
                if p.runs > 0 {
                    tracing::info!(
                        "telemetry: dropped the detail (usage series, log tails, argv) of {} runs finished over {} ago ({} attempts)",
                        p.runs,
                        scalable_common::units::format_duration_ms(keep_ms),
                        p.attempts
                    );
                }
                if p.more {
                    BACKLOG_PAUSE
                } else {
                    period(keep_ms)
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("telemetry: pruning old runs failed: {e}");
                period(keep_ms)
            }
            // The store stopped: the broker is shutting down.
            Err(_) => return,
        };
        tokio::time::sleep(pause).await;
    }
}
