//! `scalable scaling`: the scaler's stored decisions, one block each: when,
//! which target, its state, what it added and removed, how sure it was and
//! when it expected the work done, its reasoning, and its outcome once known.
//!
//! Must not: read a clock or the store; every line is built from the
//! decisions it is given.

use std::collections::BTreeMap;

use scalable_common::scaling::{ScalingDecisionInfo, ScalingOutcome};

use super::escape::printable;
use super::time::{format_utc, short_duration};

/// `scalable scaling` as text.
pub fn scaling_text(decisions: &[ScalingDecisionInfo]) -> String {
    if decisions.is_empty() {
        return "no scaling decisions\n".into();
    }
    let mut out = String::new();
    for d in decisions {
        let mut head = format!(
            "#{} {}  {}  {}  {}  confidence {:.2}",
            d.id,
            format_utc(d.at_ms),
            printable(&d.target),
            d.state,
            changes(&d.workers_to_add, &d.workers_to_remove),
            d.confidence
        );
        if let Some(s) = d.predicted_completion_seconds {
            head.push_str(&format!(
                "  done in ~{}",
                short_duration((s * 1000.0) as u64)
            ));
        }
        out.push_str(&head);
        out.push('\n');
        out.push_str(&format!("    {}\n", printable(&d.reasoning)));
        if !d.cancelled.is_empty() {
            out.push_str(&format!(
                "    cancelled: {}\n",
                printable(&d.cancelled.join(", "))
            ));
        }
        if !d.drained.is_empty() {
            out.push_str(&format!(
                "    drained: {}\n",
                printable(&d.drained.join(", "))
            ));
        }
        if let Some(o) = outcome(&d.outcome, d.at_ms) {
            out.push_str(&format!("    outcome: {o}\n"));
        }
    }
    out
}

/// `+6 demeter, -2 post` or `no change`.
fn changes(add: &BTreeMap<String, u32>, remove: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = add
        .iter()
        .map(|(t, n)| format!("+{n} {}", printable(t)))
        .chain(remove.iter().map(|(t, n)| format!("-{n} {}", printable(t))))
        .collect();
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}

fn outcome(o: &ScalingOutcome, at_ms: u64) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = o.pilots_connected_at_ms {
        parts.push(format!(
            "connected after {}",
            short_duration(c.saturating_sub(at_ms))
        ));
    }
    if let Some(s) = o.busy_seconds {
        parts.push(format!("busy {}", short_duration((s * 1000.0) as u64)));
    }
    if let Some(s) = o.idle_seconds {
        parts.push(format!("idle {}", short_duration((s * 1000.0) as u64)));
    }
    if let Some(c) = o.cost {
        parts.push(format!("cost ${c:.2}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_print_as_blocks_with_reasoning_and_outcome() {
        let d = ScalingDecisionInfo {
            id: 3,
            at_ms: 1_764_950_400_000,
            target: "hpc".into(),
            state: "active".into(),
            workers_to_add: [("demeter".to_string(), 6)].into(),
            reasoning: "demeter: 60 ready and 0 active tasks ask for 12 pilots (1 task each), 6 within bounds, 0 live; start 6.".into(),
            confidence: 0.9,
            predicted_completion_seconds: Some(10.0),
            outcome: ScalingOutcome {
                pilots_connected_at_ms: Some(1_764_950_405_000),
                busy_seconds: Some(55.0),
                idle_seconds: Some(12.0),
                cost: None,
            },
            ..ScalingDecisionInfo::default()
        };
        let held = ScalingDecisionInfo {
            id: 4,
            at_ms: 1_764_950_460_000,
            target: "hpc".into(),
            state: "backing_off".into(),
            reasoning: "demeter: would start 2, held back. Starts held: backing off.".into(),
            cancelled: vec!["p-7".into()],
            confidence: 0.5,
            ..ScalingDecisionInfo::default()
        };
        assert_eq!(
            scaling_text(&[d, held]),
            "#3 2025-12-05 16:00:00 UTC  hpc  active  +6 demeter  confidence 0.90  done in ~10s\n\
             \x20   demeter: 60 ready and 0 active tasks ask for 12 pilots (1 task each), 6 within bounds, 0 live; start 6.\n\
             \x20   outcome: connected after 5s, busy 55s, idle 12s\n\
             #4 2025-12-05 16:01:00 UTC  hpc  backing_off  no change  confidence 0.50\n\
             \x20   demeter: would start 2, held back. Starts held: backing off.\n\
             \x20   cancelled: p-7\n"
        );
        assert_eq!(scaling_text(&[]), "no scaling decisions\n");
    }
}
