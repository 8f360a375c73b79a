//! The transfers `scalable analyze` lists (issue 20): the run's tasks that
//! wait for a transfer now (from the transfer board and the core), then its
//! failed tasks whose last attempt failed on one (from the store), each
//! completed with what the board still knows of it (how the files moved,
//! how many, how many bytes).
//!
//! Owns: choosing and capping that list. It must not word anything (the
//! CLI's output layer does) nor read the store itself (its caller passes
//! the rows in, read on the store's thread).

use scalable_common::protocol::{AttemptId, RunId, TaskTransfer, TRANSFERS_SHOWN_MAX};

use super::transfer_board::{Progress, TransferBoard};
use crate::core::Core;

/// How `via` names the broker's own connection.
const VIA_BROKER: &str = "broker";
/// Characters of a failed transfer's error `analyze` carries.
const ERROR_CHARS_MAX: usize = 1_000;

/// The run's tasks waiting for a transfer now, by task id.
pub(super) fn waiting(core: &Core, board: &TransferBoard, run: RunId) -> Vec<TaskTransfer> {
    let mut out: Vec<TaskTransfer> = board
        .all()
        .into_iter()
        .filter_map(|(attempt, p)| {
            let at = core.attempt_out(attempt).filter(|a| a.run == run)?;
            p.waits(at.assigned, at.running)
                .then(|| TaskTransfer {
                    task: at.task,
                    path: at.path,
                    item: at.item,
                    direction: p.direction.name().into(),
                    agent: at.agent,
                    host: at.host,
                    via: None,
                    files: None,
                    done_bytes: None,
                    total_bytes: None,
                    error: None,
                })
                .map(|t| with_progress(t, &p))
        })
        .collect();
    out.sort_by_key(|t| t.task);
    out
}

/// The failed transfers as the store has them, with what the board still
/// knows of each attempt (nothing after a restart).
pub(super) fn failed(
    rows: Vec<(AttemptId, TaskTransfer)>,
    board: &TransferBoard,
) -> Vec<TaskTransfer> {
    rows.into_iter()
        .map(|(attempt, mut t)| {
            if let Some(e) = &mut t.error {
                if let Some((cut, _)) = e.char_indices().nth(ERROR_CHARS_MAX) {
                    e.truncate(cut);
                    e.push('…');
                }
            }
            match board.get(attempt) {
                Some(p) if p.direction.name() == t.direction => with_progress(t, &p),
                _ => t,
            }
        })
        .collect()
}

/// Waiting then failed, at most [`TRANSFERS_SHOWN_MAX`]; and how many more
/// there were (`failed_more`: failed ones the store did not list).
pub(super) fn shown(
    waiting: Vec<TaskTransfer>,
    failed: Vec<TaskTransfer>,
    failed_more: u64,
) -> (Vec<TaskTransfer>, u64) {
    let all = waiting.len() + failed.len();
    let listed: Vec<TaskTransfer> = waiting
        .into_iter()
        .chain(failed)
        .take(TRANSFERS_SHOWN_MAX)
        .collect();
    let unlisted = (all - listed.len()) as u64 + failed_more;
    (listed, unlisted)
}

fn with_progress(mut t: TaskTransfer, p: &Progress) -> TaskTransfer {
    t.via = Some(p.via.clone().unwrap_or_else(|| VIA_BROKER.into()));
    // Nothing listed yet: the broker is still preparing the files.
    let listed = p.files > 0 || p.total_bytes.is_some();
    t.files = (p.files > 0).then_some(p.files);
    // Through an object store the bytes pass the broker unseen.
    let seen = (p.via.is_none() && listed) || p.done_bytes > 0;
    t.done_bytes = if seen {
        Some(p.done_bytes)
    } else {
        t.done_bytes
    };
    t.total_bytes = p.total_bytes;
    t
}

#[cfg(test)]
mod tests {
    use super::super::transfer_board::Direction;
    use super::*;

    fn row(task: u64, direction: &str, error: &str) -> TaskTransfer {
        TaskTransfer {
            task,
            path: format!("1/j/{task}"),
            item: None,
            direction: direction.into(),
            agent: "a".into(),
            host: "h".into(),
            via: None,
            files: None,
            done_bytes: None,
            total_bytes: None,
            error: Some(error.into()),
        }
    }

    #[test]
    fn a_failed_transfer_is_completed_from_the_board_when_it_still_knows_it() {
        let board = TransferBoard::default();
        board.begin(7, Direction::In, Some("s3://b/p"));
        board.expect(7, Direction::In, 300);
        board.listed(7, Direction::In, 3);
        board.moved(8, Direction::Out, 5);
        // The agent's figures came first: the board still knows the way.
        board.finish(7);
        let long = "x".repeat(ERROR_CHARS_MAX + 10);
        let rows = vec![
            (7, row(1, "in", "hash mismatch")),
            (8, row(2, "in", &long)),
            (9, row(3, "out", "e")),
        ];
        let out = failed(rows, &board);
        assert_eq!(out[0].via.as_deref(), Some("s3://b/p"));
        assert_eq!((out[0].files, out[0].total_bytes), (Some(3), Some(300)));
        assert_eq!(
            out[0].done_bytes, None,
            "bytes through a store are not seen"
        );
        // The board's attempt 8 moved outputs: not this failure's direction.
        assert_eq!(out[1].via, None);
        assert_eq!(
            out[1].error.as_ref().unwrap().chars().count(),
            ERROR_CHARS_MAX + 1
        );
        assert_eq!(out[2].via, None, "forgotten (a restart)");
        // Refused before anything was listed: only the way is known.
        board.begin(10, Direction::In, None);
        let out = failed(vec![(10, row(4, "in", "over the bound"))], &board);
        assert_eq!(out[0].via.as_deref(), Some(VIA_BROKER));
        assert_eq!((out[0].files, out[0].done_bytes), (None, None));
    }

    #[test]
    fn waiting_comes_first_and_the_rest_is_counted() {
        let waiting: Vec<_> = (0..TRANSFERS_SHOWN_MAX as u64 - 1)
            .map(|i| row(i, "in", ""))
            .collect();
        let failed = vec![row(500, "in", "a"), row(501, "out", "b")];
        let (listed, unlisted) = shown(waiting, failed, 4);
        assert_eq!(listed.len(), TRANSFERS_SHOWN_MAX);
        assert_eq!(listed.last().unwrap().task, 500);
        assert_eq!(unlisted, 1 + 4);
    }
}
