//! Routing one batch's outcome: which message goes to which connected agent,
//! which staged outputs are promoted, which CLI replies are released, and in
//! what order, once the batch's writes are committed.
//!
//! [`route`] is pure: it reads the core's `Effects`, the pending CLI replies
//! and a lookup of live connections, and returns a [`Routed`] plan. Every
//! message it plans fits the cap: lists are split by encoded size or count. It must
//! not send, promote, spawn or read a clock; the core task executes the plan
//! (after commit, on the store's writer thread).

use scalable_common::frame::encoded_len;
use scalable_common::protocol::{
    AgentId, Assignment, Response, ToAgent, ASSIGN_BATCH_BYTES_MAX, IDS_PER_MESSAGE_MAX,
};
use tokio::sync::oneshot;

use crate::core::{CheckpointOp, Effects};

/// A read for the CLI, run on the store's connection behind earlier writes.
pub(super) type Query = Box<dyn FnOnce(&rusqlite::Connection) -> Response + Send>;

/// What a CLI request needs after the writes of this batch are durable.
pub(super) enum Deferred {
    Reply(oneshot::Sender<Response>, Response),
    Query(oneshot::Sender<Response>, Query),
}

/// A counted attempt's staged outputs to move into place under `cwd`.
pub(super) use crate::core::Promote as Promotion;

/// One thing done after the commit; `S` is how a message reaches its agent.
pub(super) enum Step<S> {
    /// A checkpoint kept, restored or dropped (before promotions and sends:
    /// the next attempt's assignment must find its checkpoint in place).
    Checkpoint(CheckpointOp),
    Promote(Promotion),
    Send(S, ToAgent),
    Reply(oneshot::Sender<Response>, Response),
}

/// What the core task does with one batch, apart from the store writes.
pub(super) struct Routed<S> {
    /// Run once the batch's rows are durable, in order: every promotion (a
    /// dependent assigned in the same batch finds its inputs in place), then
    /// every message, then every reply.
    pub after_commit: Vec<Step<S>>,
    /// Reads queued behind the batch's writes, so they see what the CLI was told.
    pub queries: Vec<(oneshot::Sender<Response>, Query)>,
    /// Agents whose connection closes once the batch is queued (lost zombies).
    pub disconnect: Vec<AgentId>,
}

impl<S> Routed<S> {
    /// Nothing to send, release or read: a batch without store writes needs
    /// no commit then.
    pub fn is_idle(&self) -> bool {
        self.after_commit.is_empty() && self.queries.is_empty()
    }
}

/// Plans the delivery of `fx`'s messages and of the pending CLI replies.
///
/// `sender` gives an agent's live connection; a message for an agent without
/// one is dropped (a reconnecting agent reports what it holds and resends its
/// unacknowledged results, and the core settles the rest when it rebinds it).
/// Takes the message fields out of `fx`.
pub(super) fn route<S>(
    fx: &mut Effects,
    mut sender: impl FnMut(AgentId) -> Option<S>,
    deferred: Vec<Deferred>,
) -> Routed<S> {
    let mut after_commit: Vec<Step<S>> = std::mem::take(&mut fx.checkpoints)
        .into_iter()
        .map(Step::Checkpoint)
        .collect();
    after_commit.extend(promotions(fx).into_iter().map(Step::Promote));
    for (agent, msg) in messages(fx) {
        if let Some(s) = sender(agent) {
            after_commit.push(Step::Send(s, msg));
        }
    }
    let mut queries = Vec::new();
    for d in deferred {
        match d {
            Deferred::Reply(tx, r) => after_commit.push(Step::Reply(tx, r)),
            Deferred::Query(tx, q) => queries.push((tx, q)),
        }
    }
    Routed {
        after_commit,
        queries,
        disconnect: std::mem::take(&mut fx.disconnect),
    }
}

/// The messages of `fx` in send order: assignments, acks, cancels, returns, shutdowns,
/// each list split so that no message exceeds the cap (bounded by
/// construction: a writer never meets a message it cannot send).
/// With `promotions`, the one place that reads the shape of `Effects`' fields.
fn messages(fx: &mut Effects) -> Vec<(AgentId, ToAgent)> {
    let mut out = Vec::new();
    for (agent, list) in std::mem::take(&mut fx.assign) {
        for batch in split_by_size(list, ASSIGN_BATCH_BYTES_MAX) {
            out.push((agent, ToAgent::Assign(batch)));
        }
    }
    for (agent, list) in std::mem::take(&mut fx.ack) {
        for part in list.chunks(IDS_PER_MESSAGE_MAX) {
            let (counted, ignored): (Vec<&crate::core::Ack>, _) =
                part.iter().partition(|x| x.counted);
            let ack = ToAgent::Ack {
                counted: counted.into_iter().map(|x| x.attempt).collect(),
                ignored: ignored.into_iter().map(|x| x.attempt).collect(),
            };
            out.push((agent, ack));
        }
    }
    for (agent, list) in std::mem::take(&mut fx.cancel) {
        for part in list.chunks(IDS_PER_MESSAGE_MAX) {
            out.push((agent, ToAgent::Cancel(part.to_vec())));
        }
    }
    for (agent, list) in std::mem::take(&mut fx.returns) {
        for part in list.chunks(IDS_PER_MESSAGE_MAX) {
            out.push((agent, ToAgent::Return(part.to_vec())));
        }
    }
    for crate::core::Shutdown { agent, reason } in std::mem::take(&mut fx.shutdown) {
        out.push((agent, ToAgent::Shutdown { reason }));
    }
    out
}

/// Consecutive runs of `list` whose encoded sizes add up to at most
/// `budget_bytes` each, in order. An item larger than the budget alone goes
/// alone (the core fails such an assignment before it gets here).
fn split_by_size(list: Vec<Assignment>, budget_bytes: usize) -> Vec<Vec<Assignment>> {
    let mut out: Vec<Vec<Assignment>> = Vec::new();
    let mut current = Vec::new();
    let mut used = 0usize;
    for a in list {
        let bytes = encoded_len(&a);
        if !current.is_empty() && used.saturating_add(bytes) > budget_bytes {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used = used.saturating_add(bytes);
        current.push(a);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn promotions(fx: &mut Effects) -> Vec<Promotion> {
    std::mem::take(&mut fx.promote)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use scalable_common::protocol::{AttemptId, MESSAGE_BYTES_MAX};
    use scalable_common::resources::Resources;

    use super::*;

    // The only places the tests know the shape of `Effects`' fields.
    fn assignment(attempt: AttemptId) -> Assignment {
        Assignment {
            attempt,
            task: attempt,
            run: 1,
            attempt_number: 1,
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: "/w".into(),
            resources: Resources::default(),
            walltime_ms: None,
            outputs: Vec::new(),
            container: None,
            inputs: Vec::new(),
        }
    }
    fn assign(fx: &mut Effects, agent: AgentId, attempts: &[AttemptId]) {
        let list = attempts.iter().map(|a| assignment(*a)).collect();
        fx.assign.insert(agent, list);
    }
    fn ack(fx: &mut Effects, agent: AgentId, acks: &[(AttemptId, bool)]) {
        let acks = acks
            .iter()
            .map(|&(attempt, counted)| crate::core::Ack { attempt, counted });
        fx.ack.insert(agent, acks.collect());
    }
    fn shutdown(fx: &mut Effects, agent: AgentId, reason: &str) {
        fx.shutdown.push(crate::core::Shutdown {
            agent,
            reason: reason.into(),
        });
    }
    fn promote(fx: &mut Effects, attempt: AttemptId) {
        fx.promote.push(Promotion {
            cwd: "/w".into(),
            attempt,
            outputs: vec![format!("out{attempt}")],
        });
    }

    /// The plan in words, so a test reads as the order things happen in.
    fn steps(routed: &Routed<AgentId>) -> Vec<String> {
        routed
            .after_commit
            .iter()
            .map(|s| match s {
                Step::Checkpoint(op) => format!("checkpoint {op:?}"),
                Step::Promote(p) => format!("promote {} {:?}", p.attempt, p.outputs),
                Step::Send(agent, msg) => format!("to {agent}: {}", describe(msg)),
                Step::Reply(_, r) => format!("reply {r:?}"),
            })
            .collect()
    }
    fn describe(msg: &ToAgent) -> String {
        match msg {
            ToAgent::Assign(list) => {
                let ids: Vec<_> = list.iter().map(|a| a.attempt).collect();
                format!("assign {ids:?}")
            }
            ToAgent::Ack { counted, ignored } => format!("ack {counted:?} ignored {ignored:?}"),
            ToAgent::Cancel(list) => format!("cancel {list:?}"),
            ToAgent::Shutdown { reason } => format!("shutdown {reason}"),
            other => format!("{other:?}"),
        }
    }
    fn live(agents: &[AgentId]) -> impl FnMut(AgentId) -> Option<AgentId> {
        let set: BTreeSet<AgentId> = agents.iter().copied().collect();
        move |a| set.contains(&a).then_some(a)
    }

    #[test]
    fn assignments_go_to_their_agents_one_message_each() {
        let mut fx = Effects::default();
        assign(&mut fx, 2, &[20, 21]);
        assign(&mut fx, 1, &[10]);
        let routed = route(&mut fx, live(&[1, 2]), Vec::new());
        assert_eq!(
            steps(&routed),
            ["to 1: assign [10]", "to 2: assign [20, 21]"]
        );
        assert!(fx.assign.is_empty(), "route takes what it routes");
    }

    #[test]
    fn a_batch_larger_than_the_cap_goes_out_in_several_messages_in_order() {
        // Regression (issue 12, defect 1): 40 tasks of 1 MB argv for one agent
        // went out as one message over the cap, which its writer dropped.
        let mut fx = Effects::default();
        let list: Vec<Assignment> = (1..=40)
            .map(|i| {
                let mut a = assignment(i);
                a.argv = vec!["true".into(), "x".repeat(1 << 20)];
                a
            })
            .collect();
        fx.assign.insert(1, list);
        let routed = route(&mut fx, live(&[1]), Vec::new());
        let mut seen = Vec::new();
        for step in &routed.after_commit {
            let Step::Send(_, msg) = step else {
                panic!("only sends")
            };
            let len = encoded_len(msg);
            assert!(len <= MESSAGE_BYTES_MAX, "a message of {len} bytes");
            let ToAgent::Assign(list) = msg else {
                panic!("only assignments")
            };
            seen.extend(list.iter().map(|a| a.attempt));
        }
        assert!(routed.after_commit.len() >= 3, "40 MB needs 3 messages");
        assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "every one, in order");
    }

    #[test]
    fn split_by_size_fills_each_message_up_to_the_budget() {
        let list: Vec<Assignment> = (1..=5).map(assignment).collect();
        let one = encoded_len(&list[0]);
        let sizes: Vec<usize> = split_by_size(list.clone(), 2 * one)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [2, 2, 1]);
        // An item over the budget goes alone rather than nowhere.
        let sizes: Vec<usize> = split_by_size(list, one - 1).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1, 1, 1]);
    }

    #[test]
    fn long_ack_and_cancel_lists_are_split_by_count() {
        let mut fx = Effects::default();
        let n = IDS_PER_MESSAGE_MAX as u64 + 3;
        let acks: Vec<(AttemptId, bool)> = (0..n).map(|i| (i, i % 2 == 0)).collect();
        ack(&mut fx, 1, &acks);
        fx.cancel.insert(1, (0..n).collect());
        let routed = route(&mut fx, live(&[1]), Vec::new());
        let lens: Vec<usize> = routed
            .after_commit
            .iter()
            .map(|s| match s {
                Step::Send(_, ToAgent::Ack { counted, ignored }) => counted.len() + ignored.len(),
                Step::Send(_, ToAgent::Cancel(list)) => list.len(),
                _ => panic!("only acks and cancels"),
            })
            .collect();
        assert_eq!(lens, [IDS_PER_MESSAGE_MAX, 3, IDS_PER_MESSAGE_MAX, 3]);
    }

    #[test]
    fn acks_are_split_into_counted_and_ignored_in_order() {
        let mut fx = Effects::default();
        ack(&mut fx, 1, &[(5, true), (3, false), (4, true), (9, false)]);
        let routed = route(&mut fx, live(&[1]), Vec::new());
        assert_eq!(steps(&routed), ["to 1: ack [5, 4] ignored [3, 9]"]);
    }

    #[test]
    fn an_ack_with_only_ignored_results_still_goes_out() {
        let mut fx = Effects::default();
        ack(&mut fx, 1, &[(7, false)]);
        let routed = route(&mut fx, live(&[1]), Vec::new());
        assert_eq!(steps(&routed), ["to 1: ack [] ignored [7]"]);
    }

    #[test]
    fn returns_reach_their_agent_after_its_cancels() {
        let mut fx = Effects::default();
        fx.returns.insert(3, vec![32, 33]);
        fx.cancel.insert(3, vec![30]);
        let routed = route(&mut fx, live(&[3]), Vec::new());
        assert_eq!(
            steps(&routed),
            ["to 3: cancel [30]", "to 3: Return([32, 33])"]
        );
    }

    #[test]
    fn cancels_and_shutdowns_reach_their_agents() {
        let mut fx = Effects::default();
        fx.cancel.insert(3, vec![30, 31]);
        shutdown(&mut fx, 4, "scaled down");
        let routed = route(&mut fx, live(&[3, 4]), Vec::new());
        assert_eq!(
            steps(&routed),
            ["to 3: cancel [30, 31]", "to 4: shutdown scaled down"]
        );
    }

    #[test]
    fn one_agent_hears_assign_then_ack_then_cancel_then_shutdown() {
        let mut fx = Effects::default();
        shutdown(&mut fx, 1, "drained");
        fx.cancel.insert(1, vec![12]);
        ack(&mut fx, 1, &[(11, true)]);
        assign(&mut fx, 1, &[13]);
        let routed = route(&mut fx, live(&[1]), Vec::new());
        assert_eq!(
            steps(&routed),
            [
                "to 1: assign [13]",
                "to 1: ack [11] ignored []",
                "to 1: cancel [12]",
                "to 1: shutdown drained",
            ]
        );
    }

    #[test]
    fn messages_for_an_agent_without_a_connection_are_dropped() {
        let mut fx = Effects::default();
        assign(&mut fx, 1, &[10]);
        assign(&mut fx, 2, &[20]);
        ack(&mut fx, 2, &[(19, true)]);
        shutdown(&mut fx, 2, "gone");
        let routed = route(&mut fx, live(&[1]), Vec::new());
        assert_eq!(steps(&routed), ["to 1: assign [10]"]);
    }

    #[test]
    fn promotions_come_before_every_message_and_replies_last() {
        let mut fx = Effects::default();
        assign(&mut fx, 1, &[10]);
        ack(&mut fx, 1, &[(7, true)]);
        promote(&mut fx, 7);
        promote(&mut fx, 8);
        let (tx, _rx) = oneshot::channel();
        let deferred = vec![Deferred::Reply(tx, Response::ShuttingDown)];
        let routed = route(&mut fx, live(&[1]), deferred);
        assert_eq!(
            steps(&routed),
            [
                "promote 7 [\"out7\"]",
                "promote 8 [\"out8\"]",
                "to 1: assign [10]",
                "to 1: ack [7] ignored []",
                "reply ShuttingDown",
            ]
        );
    }

    /// A restored checkpoint is in place before the assignment of the
    /// attempt that needs it is sent.
    #[test]
    fn checkpoints_come_before_promotions_and_messages() {
        let mut fx = Effects::default();
        assign(&mut fx, 1, &[10]);
        promote(&mut fx, 7);
        fx.checkpoints.push(CheckpointOp::Drop { task: 3 });
        let routed = route(&mut fx, live(&[1]), Vec::new());
        assert_eq!(
            steps(&routed),
            [
                "checkpoint Drop { task: 3 }",
                "promote 7 [\"out7\"]",
                "to 1: assign [10]",
            ]
        );
    }

    #[test]
    fn a_promotion_happens_even_when_its_agent_is_gone() {
        let mut fx = Effects::default();
        promote(&mut fx, 7);
        ack(&mut fx, 1, &[(7, true)]);
        let routed = route(&mut fx, live(&[]), Vec::new());
        assert_eq!(steps(&routed), ["promote 7 [\"out7\"]"]);
        assert!(!routed.is_idle());
    }

    #[test]
    fn replies_are_released_only_after_the_commit_and_queries_queue_behind_it() {
        let mut fx = Effects::default();
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let (query_tx, _query_rx) = oneshot::channel();
        let query: Query = Box::new(|_| Response::ShuttingDown);
        let deferred = vec![
            Deferred::Query(query_tx, query),
            Deferred::Reply(reply_tx, Response::Agents(Vec::new())),
        ];
        let routed = route(&mut fx, live(&[]), deferred);
        // Planning sends nothing: the reply waits in the after-commit steps.
        assert!(reply_rx.try_recv().is_err());
        assert_eq!(steps(&routed), ["reply Agents([])"]);
        assert_eq!(routed.queries.len(), 1);
        assert!(!routed.is_idle());
    }

    #[test]
    fn disconnects_close_after_the_messages_planned_for_them() {
        let mut fx = Effects::default();
        shutdown(&mut fx, 5, "lost");
        fx.disconnect.push(5);
        let routed = route(&mut fx, live(&[5]), Vec::new());
        assert_eq!(steps(&routed), ["to 5: shutdown lost"]);
        assert_eq!(routed.disconnect, [5]);
        assert!(fx.disconnect.is_empty());
    }

    /// Routing stays pure: its code (above the tests) does no I/O of any kind.
    #[test]
    fn routing_does_no_io() {
        let src = include_str!("routing.rs");
        let code = &src[..src.find("#[cfg(test)]").unwrap()];
        for io in [
            "spawn(",
            "std::fs",
            "stage::",
            ".send(",
            "Instant::",
            "SystemTime::",
            "tracing::",
        ] {
            assert!(!code.contains(io), "routing.rs mentions {io}");
        }
    }

    #[test]
    fn a_batch_with_nothing_to_deliver_is_idle() {
        let mut fx = Effects::default();
        fx.disconnect.push(5);
        let routed = route(&mut fx, live(&[5]), Vec::new());
        assert!(routed.is_idle());
        assert_eq!(routed.disconnect, [5]);
    }
}
