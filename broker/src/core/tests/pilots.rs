//! Pilots and their agents (`fleet` over the core's agents): the link is
//! made whichever of the two is known first.

use scalable_common::protocol::{PilotPhase, ScaleChange};

use super::*;
use crate::fleet::Fleet;
use crate::providers::{self, StartedPilot};

/// An agent of pilot `pilot` (its `SCALABLE_PILOT_ID`) dials in.
fn pilot_agent(env: &mut TestEnv, pilot: &str) -> AgentId {
    let mut h = hello(2, &["sim"], &format!("agent-of-{pilot}"));
    h.pilot_id = Some(pilot.to_string());
    env.core.agent_connected(&h, env.now_ms)
}

fn started(id: &str) -> StartedPilot {
    StartedPilot {
        pilot_id: id.to_string(),
        provider_id: format!("local-{id}"),
        agent_id: providers::AgentId::Exact(id.to_string()),
        commands: vec![],
    }
}

/// Regression (issue 13, bug 3): the local provider's agent connected a few
/// milliseconds before `start` returned and its pilot was recorded; it was
/// never linked, stayed `running` without an agent, and `scale -1`
/// cancelled it as "not connected yet" while its agent ran tasks.
#[test]
fn an_agent_that_connects_before_its_pilot_is_recorded_is_linked_when_it_is() {
    let mut env = TestEnv::new();
    let mut fleet = Fleet::new("laptop", vec![]);
    let ids = fleet.new_ids(2);
    let early = pilot_agent(&mut env, &ids[0]);
    assert!(
        fleet.agent_connected(&ids[0], early, env.now_ms).is_none(),
        "its pilot is not recorded yet"
    );
    env.advance(5);
    let gone = pilot_agent(&mut env, &ids[1]);
    env.core.agent_disconnected(gone, env.now_ms);
    env.step();
    let recorded_at = env.now_ms;
    fleet.started(
        Some("sim"),
        &[started(&ids[0]), started(&ids[1])],
        recorded_at,
    );

    let links = fleet.link_connected(&env.core.agent_infos());
    assert_eq!(links.len(), 1, "only the connected agent: {links:?}");
    assert_eq!(
        (links[0].pilot.as_str(), links[0].agent),
        (ids[0].as_str(), early)
    );
    assert_eq!(links[0].wait_ms, 0, "it was there before its pilot");
    let infos = fleet.infos();
    assert_eq!(infos[0].state, PilotPhase::Connected);
    assert_eq!(infos[0].agent, Some(early));
    assert_eq!(
        infos[0].connected_at_ms,
        Some(recorded_at),
        "never before it"
    );
    assert_eq!(infos[1].agent, None);
    assert!(
        fleet.link_connected(&env.core.agent_infos()).is_empty(),
        "linked once"
    );

    // Busy, it is kept by `scale -1` (the pilot without an agent goes), and
    // never cancelled as "not connected yet".
    let mut sim = job("sim", 1);
    sim.tag = Some("sim".into());
    env.submit(vec![sim]);
    let fx = env.step();
    assert_eq!(assigned(&fx, early).len(), 1);
    let plan = fleet.plan_scale(
        Some("sim"),
        ScaleChange::Set(0),
        &env.core.agent_infos(),
        false,
    );
    assert_eq!(plan.cancel, vec![ids[1].clone()]);
    assert_eq!(plan.kept_busy, 1);
}
