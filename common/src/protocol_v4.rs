//! What agents of protocols 3 and 4 send, so a broker of protocol 5 keeps
//! serving them (issue 14: a newer broker serves the previous agents when the
//! protocol allows). Protocol 5 added two fields at the end of
//! [`AttemptResult`] (`exit_code`, `memory_limit_bytes`); postcard encodes
//! fields by position, so an older agent's `Events` decode only as these
//! types, and are converted. Everything the broker sends agents is unchanged
//! since protocol 3.
//!
//! Converts to protocol 5's types (`protocol_v5`), which convert to the
//! current ones: each older protocol's module knows one step only.

use serde::{Deserialize, Serialize};

use crate::protocol::{AttemptEnd, AttemptId, AttemptResult, FromAgent, Started};
use crate::protocol_v5::{AttemptResultV5, FromAgentV5};
use crate::resources::Resources;

/// The first protocol whose agents send [`FromAgentV5`].
pub const AGENT_MESSAGES_SINCE: u16 = 5;

/// [`FromAgent`] as protocols 3 and 4 encode it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromAgentV4 {
    Events {
        started: Vec<Started>,
        finished: Vec<AttemptResultV4>,
        free: Resources,
    },
    Heartbeat {
        running: u32,
        queued: u32,
    },
    Leaving {
        reason: String,
    },
}

/// [`AttemptResult`] without the fields protocol 5 added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptResultV4 {
    pub attempt: AttemptId,
    pub end: AttemptEnd,
    pub started_at_us: u64,
    pub ended_at_us: u64,
    pub peak_rss_bytes: u64,
    pub cpu_time_us: u64,
    pub stdout_tail: Vec<u8>,
    pub stderr_tail: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl From<AttemptResultV4> for AttemptResultV5 {
    /// The exit code is known only where the end says it; the limit the
    /// older agent enforced is not known.
    fn from(r: AttemptResultV4) -> AttemptResultV5 {
        let exit_code = match r.end {
            AttemptEnd::Exited { code } => Some(code),
            _ => None,
        };
        AttemptResultV5 {
            attempt: r.attempt,
            end: r.end,
            started_at_us: r.started_at_us,
            ended_at_us: r.ended_at_us,
            peak_rss_bytes: r.peak_rss_bytes,
            cpu_time_us: r.cpu_time_us,
            stdout_tail: r.stdout_tail,
            stderr_tail: r.stderr_tail,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            exit_code,
            memory_limit_bytes: None,
        }
    }
}

impl From<AttemptResultV4> for AttemptResult {
    fn from(r: AttemptResultV4) -> AttemptResult {
        AttemptResult::from(AttemptResultV5::from(r))
    }
}

impl From<FromAgentV4> for FromAgentV5 {
    fn from(m: FromAgentV4) -> FromAgentV5 {
        match m {
            FromAgentV4::Events {
                started,
                finished,
                free,
            } => FromAgentV5::Events {
                started,
                finished: finished.into_iter().map(AttemptResultV5::from).collect(),
                free,
            },
            FromAgentV4::Heartbeat { running, queued } => {
                FromAgentV5::Heartbeat { running, queued }
            }
            FromAgentV4::Leaving { reason } => FromAgentV5::Leaving { reason },
        }
    }
}

impl From<FromAgentV4> for FromAgent {
    fn from(m: FromAgentV4) -> FromAgent {
        FromAgent::from(FromAgentV5::from(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agents_events_decode_and_convert() {
        let old = FromAgentV4::Events {
            started: vec![Started {
                attempt: 7,
                at_us: 1,
            }],
            finished: vec![AttemptResultV4 {
                attempt: 7,
                end: AttemptEnd::Exited { code: 2 },
                started_at_us: 1,
                ended_at_us: 2,
                peak_rss_bytes: 3,
                cpu_time_us: 4,
                stdout_tail: b"out".to_vec(),
                stderr_tail: b"err".to_vec(),
                stdout_bytes: 3,
                stderr_bytes: 3,
            }],
            free: Resources::cpus(1),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        // The current type cannot read it (the reason this module exists) ...
        assert!(postcard::from_bytes::<FromAgent>(&bytes).is_err());
        // ... the old one can, and converts with the exit code kept.
        let back: FromAgentV4 = postcard::from_bytes(&bytes).unwrap();
        let FromAgent::Events { finished, .. } = FromAgent::from(back) else {
            panic!("events")
        };
        assert_eq!(finished[0].exit_code, Some(2));
        assert_eq!(finished[0].memory_limit_bytes, None);
        assert_eq!(finished[0].stderr_tail, b"err");
    }
}
