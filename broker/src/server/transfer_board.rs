//! Transfers under way (issue 20), for `scalable why` and `analyze`: which
//! attempts an agent without a shared filesystem is staging in or out right
//! now, how (through the broker or an object store), and how many bytes of
//! how many files moved.
//!
//! Owns: the progress of each attempt's current transfer, as the staging
//! streams (`staging_io`) see it pass, and whether a task in a given state
//! waits for it (`waits`, which refines a `why` answer). A board, not a
//! record: a broker restart forgets it, and the store keeps only the totals
//! each agent reports. It must not decide anything about an attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use scalable_common::explain::Reason;
use scalable_common::protocol::AttemptId;

/// Attempts on the board at most; past it the board starts over (a `why`
/// then says less for a moment).
const ATTEMPTS_MAX: usize = 100_000;
/// Ended attempts the board keeps for `analyze` at most.
const ENDED_KEPT: usize = 10_000;

/// Which way an attempt's files move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    /// As `analyze` names it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One attempt's transfer so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub direction: Direction,
    pub done_bytes: u64,
    /// What the declared files add up to, when the broker was told.
    pub total_bytes: Option<u64>,
    /// Files listed so far (inputs declared, outputs handed over).
    pub files: u64,
    /// The object store the files move through; `None`: the broker.
    pub via: Option<String>,
    /// The agent reported the attempt over: nothing waits for it any more,
    /// but `analyze` still words its failure with how it moved.
    pub ended: bool,
}

impl Progress {
    fn new(direction: Direction) -> Progress {
        Progress {
            direction,
            done_bytes: 0,
            total_bytes: None,
            files: 0,
            via: None,
            ended: false,
        }
    }

    /// Whether a task waits for this transfer while it is `assigned` (its
    /// inputs) or `running` (its outputs, once its process ended).
    pub fn waits(&self, assigned: bool, running: bool) -> bool {
        if self.ended {
            return false;
        }
        match self.direction {
            // All fetched: it only waits for room in its agent's queue.
            Direction::In => assigned && self.total_bytes.is_none_or(|t| self.done_bytes < t),
            Direction::Out => running,
        }
    }
}

#[derive(Default)]
pub struct TransferBoard(Mutex<Board>);

#[derive(Default)]
struct Board {
    map: HashMap<AttemptId, Progress>,
    /// Ended attempts still on the board, oldest first: at most
    /// [`ENDED_KEPT`], so a long run's finished transfers do not pile up.
    ended: VecDeque<AttemptId>,
}

impl TransferBoard {
    fn with(&self, attempt: AttemptId, direction: Direction, f: impl FnOnce(&mut Progress)) {
        let mut board = self.0.lock().expect("transfer board");
        if board.map.len() >= ATTEMPTS_MAX && !board.map.contains_key(&attempt) {
            board.map.clear();
            board.ended.clear();
        }
        let p = board
            .map
            .entry(attempt)
            .or_insert_with(|| Progress::new(direction));
        // A new direction is a new transfer (outputs after inputs).
        if p.direction != direction {
            *p = Progress::new(direction);
        }
        f(p);
    }

    /// The agent asked to move `attempt`'s files `direction`, through the
    /// object store `via` (`None`: through the broker).
    pub fn begin(&self, attempt: AttemptId, direction: Direction, via: Option<&str>) {
        self.with(attempt, direction, |p| p.via = via.map(str::to_string));
    }

    /// `files` more were listed for `attempt`.
    pub fn listed(&self, attempt: AttemptId, direction: Direction, files: u64) {
        self.with(attempt, direction, |p| {
            p.files = p.files.saturating_add(files)
        });
    }

    /// `bytes` more are to move for `attempt` (a list of declared files).
    pub fn expect(&self, attempt: AttemptId, direction: Direction, bytes: u64) {
        self.with(attempt, direction, |p| {
            p.total_bytes = Some(p.total_bytes.unwrap_or(0).saturating_add(bytes));
        });
    }

    /// `bytes` moved for `attempt`.
    pub fn moved(&self, attempt: AttemptId, direction: Direction, bytes: u64) {
        self.with(attempt, direction, |p| {
            p.done_bytes = p.done_bytes.saturating_add(bytes);
        });
    }

    /// The agent reported `attempt` over. A committed attempt left the
    /// board already; one whose transfer failed stays, marked ended, so that
    /// `analyze` can still say how its files moved, however soon after the
    /// failure this report arrives (the board's bound forgets it later).
    pub fn finish(&self, attempt: AttemptId) {
        let mut board = self.0.lock().expect("transfer board");
        let Some(p) = board.map.get_mut(&attempt) else {
            return;
        };
        if !p.ended {
            p.ended = true;
            board.ended.push_back(attempt);
        }
        while board.ended.len() > ENDED_KEPT {
            let old = board.ended.pop_front().expect("longer than the bound");
            if board.map.get(&old).is_some_and(|p| p.ended) {
                board.map.remove(&old);
            }
        }
    }

    /// The attempt's transfers are over (committed).
    pub fn end(&self, attempt: AttemptId) {
        self.0.lock().expect("transfer board").map.remove(&attempt);
    }

    pub fn get(&self, attempt: AttemptId) -> Option<Progress> {
        self.0
            .lock()
            .expect("transfer board")
            .map
            .get(&attempt)
            .cloned()
    }

    /// Every attempt on the board, with its progress.
    pub fn all(&self) -> Vec<(AttemptId, Progress)> {
        let board = self.0.lock().expect("transfer board");
        board.map.iter().map(|(a, p)| (*a, p.clone())).collect()
    }

    /// `reason` for `attempt`, refined when it is staging: an assigned task
    /// whose inputs are being fetched, a running one whose outputs go back.
    pub fn refine(&self, reason: Reason, attempt: Option<AttemptId>) -> Reason {
        let Some(p) = attempt.and_then(|a| self.get(a)) else {
            return reason;
        };
        let assigned = matches!(reason, Reason::Assigned { .. });
        let running = matches!(reason, Reason::Running { .. });
        if !p.waits(assigned, running) {
            return reason;
        }
        let (done_bytes, total_bytes) = (p.done_bytes, p.total_bytes);
        match (reason, p.direction) {
            (Reason::Assigned { agent }, Direction::In) => Reason::StagingIn {
                agent,
                done_bytes,
                total_bytes,
            },
            (Reason::Running { agent }, Direction::Out) => Reason::StagingOut {
                agent,
                done_bytes,
                total_bytes,
            },
            (other, _) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assigned_task_staging_in_and_a_running_one_staging_out_are_refined() {
        let board = TransferBoard::default();
        let assigned = Reason::Assigned { agent: None };
        assert_eq!(board.refine(assigned.clone(), Some(1)), assigned);
        board.expect(1, Direction::In, 100);
        board.moved(1, Direction::In, 40);
        assert_eq!(
            board.refine(assigned.clone(), Some(1)),
            Reason::StagingIn {
                agent: None,
                done_bytes: 40,
                total_bytes: Some(100)
            }
        );
        board.moved(1, Direction::In, 60);
        assert_eq!(board.refine(assigned.clone(), Some(1)), assigned, "queued");
        // Running with its inputs fetched long ago: just running.
        let running = Reason::Running { agent: None };
        assert_eq!(board.refine(running.clone(), Some(1)), running);
        board.moved(1, Direction::Out, 7);
        assert_eq!(
            board.refine(running.clone(), Some(1)),
            Reason::StagingOut {
                agent: None,
                done_bytes: 7,
                total_bytes: None
            }
        );
        board.finish(1);
        assert_eq!(board.refine(running.clone(), Some(1)), running);
        assert_eq!(board.get(1).map(|p| p.done_bytes), Some(7), "kept");
        board.end(1);
        assert_eq!(board.get(1), None);
        board.finish(1);
        assert_eq!(board.get(1), None, "a committed attempt is not put back");
    }

    #[test]
    fn ended_attempts_are_kept_up_to_their_bound_oldest_dropped_first() {
        let board = TransferBoard::default();
        let n = ENDED_KEPT as u64 + 2;
        for a in 0..n {
            board.listed(a, Direction::Out, 1);
            board.finish(a);
        }
        board.listed(n, Direction::Out, 1);
        assert_eq!(board.get(0), None);
        assert_eq!(board.get(1), None);
        assert!(board.get(2).is_some_and(|p| p.ended && p.files == 1));
        assert!(board.get(n).is_some_and(|p| !p.ended), "live ones stay");
        assert_eq!(board.all().len(), ENDED_KEPT + 1);
    }
}
