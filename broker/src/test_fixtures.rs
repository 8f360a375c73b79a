//! Values that tests across the broker's modules build alike (test builds
//! only): a module's own fixtures stay in its tests; one lands here once a
//! second module needs it.
//!
//! Must not: hold assertions, or anything but plain constructors.

use scalable_common::protocol::{AgentId, AgentInfo};

/// A connected, untagged agent `a{id}` on host `h` with `running` tasks and
/// nothing else to say (no resources, no runtimes).
pub fn agent_info(id: AgentId, running: u32) -> AgentInfo {
    AgentInfo {
        id,
        name: format!("a{id}"),
        hostname: "h".into(),
        tags: vec![],
        resources: Default::default(),
        free: Default::default(),
        running,
        queued: 0,
        connected_at_ms: 0,
        completed: 0,
        runtimes: vec![],
        limit_mode: "sampling".into(),
        pilot_id: None,
        connected: true,
    }
}
