//! The scaler's rules, one evaluation at a time:
//! - scale up when ready work a fresh pilot could run (and finish within its
//!   lifetime) would keep more pilots busy over the target duration than
//!   the group has, pending ones included, and the utilisation reaches the
//!   up threshold; sized to the work, not one pilot per task; right away
//!   (pending pilots keep the next evaluation from adding them again);
//! - scale down only after `scale_down_evaluations` evaluations in a row
//!   asked for fewer pilots at or under the down threshold, the group's
//!   cooldown since its last change has passed, and then only pending
//!   pilots (newest first) and pilots idle for at least the cooldown
//!   (longest idle first); never a busy one;
//! - keep every group and the target within its minimum and maximum;
//! - start nothing while backing off or paused after provider failures,
//!   and say so.
//!
//! Pure: the same input and `now` give the same decision.

use scalable_common::protocol::AgentId;

use super::decision::{GroupDecision, ScaleDecision};
use super::input::{group_label, PilotStatus, PilotView, ScaleInput};
use super::memory::ScalerState;
use super::sizing::{group_need, GroupNeed};

/// Fractions of a pilot below this are rounding, not demand.
const PILOT_EPSILON: f64 = 1e-6;

/// One group's decision while it is being made.
struct GroupPlan {
    d: GroupDecision,
    need: GroupNeed,
    cancel: Vec<String>,
    drain: Vec<(String, AgentId)>,
    notes: Vec<String>,
}

/// Decides what the target's pilots should become (see the module doc).
pub fn decide(input: &ScaleInput, now_ms: u64) -> ScaleDecision {
    let state = input.memory.state(now_ms, input.config);
    let mut plans: Vec<GroupPlan> = (0..input.groups.len())
        .map(|i| plan_group(input, i, &state, now_ms))
        .collect();
    target_bounds(input, &state, &mut plans);
    assemble(input, plans, state, now_ms)
}

fn plan_group(input: &ScaleInput, i: usize, state: &ScalerState, now_ms: u64) -> GroupPlan {
    let cfg = input.config;
    let group = &input.groups[i];
    let label = group_label(group.tag.as_deref());
    let mine: Vec<&PilotView> = input
        .pilots
        .iter()
        .filter(|p| p.tag == group.tag && p.status != PilotStatus::Draining)
        .collect();
    let current = mine.len() as u32;
    let need = group_need(input, i);
    let min = cfg.minimum.for_group(&label).unwrap_or(0);
    let max = cfg
        .maximum
        .for_group(&label)
        .unwrap_or(u32::MAX)
        .min(cfg.max_workers);
    let raw = (need.pilots - PILOT_EPSILON).ceil().max(0.0) as u32;
    let desired = raw.clamp(min.min(max), max);
    let utilisation = (current > 0).then(|| need.pilots / current as f64);
    let mut plan = GroupPlan {
        d: GroupDecision {
            label: label.clone(),
            tag: group.tag.clone(),
            current,
            desired,
            fitting: need.fitting,
            active: need.active,
            slots_per_pilot: need.slots_per_pilot,
            utilisation,
            add: 0,
            remove: 0,
            low_streak: 0,
            note: String::new(),
        },
        notes: vec![describe_need(&need, raw, desired, current)],
        need,
        cancel: Vec::new(),
        drain: Vec::new(),
    };
    let up = if current < min {
        plan.notes.push(format!("below its minimum of {min}"));
        min - current
    } else if plan.need.fitting > 0
        && desired > current
        && utilisation.is_none_or(|u| u >= cfg.scale_up_threshold)
    {
        desired - current
    } else {
        0
    };
    if up > 0 {
        match state {
            ScalerState::Active => {
                plan.d.add = up;
                plan.notes.push(format!("start {up}"));
            }
            _ => plan.notes.push(format!("would start {up}, held back")),
        }
        return plan;
    }
    let low = desired < current
        && (current > max || utilisation.is_some_and(|u| u <= cfg.scale_down_threshold));
    if low {
        scale_down(input, &mine, &mut plan, now_ms);
    } else if plan.need.fitting > 0 && desired <= current {
        plan.notes.push("the live pilots can take it".into());
    }
    plan
}

/// What the work asks for, in words.
fn describe_need(need: &GroupNeed, raw: u32, desired: u32, current: u32) -> String {
    let mut s = format!(
        "{} ready and {} active tasks ask for {raw} pilot{}",
        need.fitting,
        need.active,
        plural(raw)
    );
    if need.fitting + need.active > 0 {
        s.push_str(&format!(
            " ({} task{} each)",
            need.slots_per_pilot,
            plural(need.slots_per_pilot)
        ));
    }
    if desired != raw {
        s.push_str(&format!(", {desired} within bounds"));
    }
    s.push_str(&format!(", {current} live"));
    if need.too_long > 0 {
        s.push_str(&format!(
            "; {} ready task{} would outlast a new pilot's lifetime: none started for them",
            need.too_long,
            plural(need.too_long as u32)
        ));
    }
    s
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The low signal held: remove pilots once it is stable and the cooldowns
/// have passed, pending ones first, then idle ones; never busy ones.
fn scale_down(input: &ScaleInput, mine: &[&PilotView], plan: &mut GroupPlan, now_ms: u64) {
    let cfg = input.config;
    let label = &plan.d.label;
    let streak = input.memory.low_streak.get(label).copied().unwrap_or(0) + 1;
    plan.d.low_streak = streak;
    let cooldown_ms = cfg.cooldown_seconds.saturating_mul(1000);
    let since_change = input
        .memory
        .last_change_ms
        .get(label)
        .map(|at| now_ms.saturating_sub(*at));
    if streak < cfg.scale_down_evaluations {
        plan.notes.push(format!(
            "fewer pilots asked {streak} of {} evaluations in a row",
            cfg.scale_down_evaluations
        ));
        return;
    }
    if let Some(since) = since_change.filter(|s| *s < cooldown_ms) {
        plan.notes.push(format!(
            "cooldown: {} s since the last change, {} s needed",
            since / 1000,
            cfg.cooldown_seconds
        ));
        return;
    }
    let mut want = plan.d.current - plan.d.desired;
    let mut pending: Vec<&&PilotView> = mine.iter().filter(|p| p.status.pending()).collect();
    // Newest first; among pilots of one submission, the highest serial.
    pending.sort_by_key(|p| std::cmp::Reverse((p.submitted_at_ms, p.id.len(), p.id.as_str())));
    for p in pending.into_iter().take(want as usize) {
        plan.cancel.push(p.id.clone());
    }
    want -= plan.cancel.len() as u32;
    let mut idle: Vec<(u64, &str, AgentId)> = mine
        .iter()
        .filter_map(|p| match p.status {
            PilotStatus::Idle { agent, since_ms } => Some((since_ms, p.id.as_str(), agent)),
            _ => None,
        })
        .collect();
    idle.sort();
    let long_idle = idle
        .iter()
        .filter(|(since, _, _)| now_ms.saturating_sub(*since) >= cooldown_ms);
    for (_, id, agent) in long_idle.take(want as usize) {
        plan.drain.push((id.to_string(), *agent));
    }
    want -= plan.drain.len() as u32;
    plan.d.remove = (plan.cancel.len() + plan.drain.len()) as u32;
    if plan.d.remove > 0 {
        plan.notes.push(format!(
            "remove {} (cancel {} pending, drain {} idle)",
            plan.d.remove,
            plan.cancel.len(),
            plan.drain.len()
        ));
    }
    if want > 0 {
        plan.notes.push(format!(
            "{want} more kept: busy, or idle for less than {} s",
            cfg.cooldown_seconds
        ));
    }
}

/// The target's own bounds over all groups: fewer starts above the
/// maximum, fewer removals (then starts) below the minimum.
fn target_bounds(input: &ScaleInput, state: &ScalerState, plans: &mut [GroupPlan]) {
    let cfg = input.config;
    let cap = cfg
        .maximum
        .for_target()
        .unwrap_or(u32::MAX)
        .min(cfg.max_workers) as i64;
    let after = |plans: &[GroupPlan]| -> i64 {
        plans
            .iter()
            .map(|p| p.d.current as i64 + p.d.add as i64 - p.d.remove as i64)
            .sum()
    };
    let mut excess = after(plans) - cap;
    for p in plans.iter_mut().rev().filter(|p| p.d.add > 0) {
        if excess <= 0 {
            break;
        }
        let cut = (p.d.add as i64).min(excess) as u32;
        p.d.add -= cut;
        excess -= cut as i64;
        p.notes
            .push(format!("{cut} fewer: the target's maximum is {cap}"));
    }
    let min = cfg.minimum.for_target().unwrap_or(0).min(cap as u32) as i64;
    let mut deficit = min - after(plans);
    for p in plans.iter_mut() {
        while deficit > 0 && p.d.remove > 0 {
            if p.drain.pop().is_none() {
                p.cancel.pop();
            }
            p.d.remove -= 1;
            deficit -= 1;
            p.notes
                .push(format!("kept one: the target's minimum is {min}"));
        }
    }
    if deficit > 0 {
        if let Some(p) = plans.iter_mut().max_by_key(|p| p.d.fitting) {
            match state {
                ScalerState::Active => {
                    p.d.add += deficit as u32;
                    p.notes
                        .push(format!("start {deficit}: the target's minimum is {min}"));
                }
                _ => p
                    .notes
                    .push(format!("below the target's minimum of {min}, held back")),
            }
        }
    }
}

fn assemble(
    input: &ScaleInput,
    plans: Vec<GroupPlan>,
    state: ScalerState,
    now_ms: u64,
) -> ScaleDecision {
    let mut d = ScaleDecision {
        at_ms: now_ms,
        target: input.target.to_string(),
        workers_to_add: Default::default(),
        workers_to_remove: Default::default(),
        cancel: Vec::new(),
        drain: Vec::new(),
        reasoning: String::new(),
        confidence: confidence(&plans),
        predicted_completion_seconds: completion(input, &plans),
        state,
        groups: Vec::new(),
    };
    let mut sentences = Vec::new();
    for mut p in plans {
        if p.d.add > 0 {
            d.workers_to_add.insert(p.d.label.clone(), p.d.add);
        }
        if p.d.remove > 0 {
            d.workers_to_remove.insert(p.d.label.clone(), p.d.remove);
        }
        d.cancel.append(&mut p.cancel);
        d.drain.append(&mut p.drain);
        p.d.note = p.notes.join("; ");
        sentences.push(format!("{}: {}.", p.d.label, p.d.note));
        d.groups.push(p.d);
    }
    if sentences.is_empty() {
        sentences.push("no pilot groups to scale.".into());
    }
    if let Some(s) = state_sentence(&d.state) {
        sentences.push(s);
    }
    d.reasoning = sentences.join(" ");
    d
}

fn state_sentence(state: &ScalerState) -> Option<String> {
    match state {
        ScalerState::Active => None,
        ScalerState::BackingOff {
            failures,
            until_ms,
            last_error,
        } => Some(format!(
            "Starts held: backing off after {failures} provider failure{} in a row until {until_ms} ms (last error: {last_error}).",
            plural(*failures)
        )),
        ScalerState::Paused {
            failures,
            last_error,
        } => Some(format!(
            "Starts paused after {failures} provider failures in a row (last error: {last_error}); a successful scalable scale resumes them."
        )),
    }
}

/// Higher when the work's run times were predicted, not guessed.
fn confidence(plans: &[GroupPlan]) -> f64 {
    let tasks: u64 = plans.iter().map(|p| p.need.fitting + p.need.active).sum();
    if tasks == 0 {
        return 0.9;
    }
    let predicted: u64 = plans.iter().map(|p| p.need.predicted_tasks).sum();
    let c = 0.5 + 0.4 * predicted.min(tasks) as f64 / tasks as f64;
    (c * 100.0).round() / 100.0
}

/// Seconds until the known work is done on the pilots after this decision
/// (new ones after their expected queue wait); the slowest group.
fn completion(input: &ScaleInput, plans: &[GroupPlan]) -> Option<f64> {
    let mut worst: Option<f64> = None;
    for p in plans.iter().filter(|p| p.need.work_seconds > 0.0) {
        let pilots = p.d.current + p.d.add - p.d.remove;
        if pilots == 0 {
            continue;
        }
        let slots = (pilots * p.d.slots_per_pilot.max(1)) as f64;
        let mut t = (p.need.work_seconds / slots).max(p.need.longest_seconds);
        if p.d.add > 0 && p.d.current == p.d.remove {
            t += input.predictions.pilot_start_seconds.unwrap_or(0.0);
        }
        worst = Some(worst.map_or(t, |w: f64| w.max(t)));
    }
    worst.map(|t| (t * 10.0).round() / 10.0)
}
