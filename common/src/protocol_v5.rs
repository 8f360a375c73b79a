//! What agents of protocol 5 send, so a broker of protocol 6 keeps serving
//! them. Protocol 6 added four fields at the end of [`AttemptResult`]
//! (`read_bytes`, `write_bytes`, `input_bytes`, `usage`); postcard encodes
//! fields by position, so a protocol 5 agent's `Events` decode only as these
//! types, and are converted. Everything the broker sends agents is unchanged
//! since protocol 3.
//!
//! One module per older protocol, each converting to its successor's types
//! (`protocol_v4` → this → the current ones), so no conversion knows more
//! than one step. Must not hold anything but the previous shapes and their
//! conversion; when the chain grows long, move
//! [`crate::handshake::AGENT_PROTOCOL_OLDEST`] up and drop its oldest link.

use serde::{Deserialize, Serialize};

use crate::protocol::{AttemptEnd, AttemptId, AttemptResult, FromAgent, Started};
use crate::resources::Resources;

/// The first protocol whose agents send [`FromAgent`] as it is now.
pub const AGENT_MESSAGES_SINCE: u16 = 6;

/// [`FromAgent`] as protocol 5 encodes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromAgentV5 {
    Events {
        started: Vec<Started>,
        finished: Vec<AttemptResultV5>,
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

/// [`AttemptResult`] without the fields protocol 6 added.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptResultV5 {
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
    pub exit_code: Option<i32>,
    pub memory_limit_bytes: Option<u64>,
}

impl From<AttemptResultV5> for AttemptResult {
    /// What a protocol 5 agent did not measure is unknown, not zero.
    fn from(r: AttemptResultV5) -> AttemptResult {
        AttemptResult {
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
            exit_code: r.exit_code,
            memory_limit_bytes: r.memory_limit_bytes,
            read_bytes: None,
            write_bytes: None,
            input_bytes: Vec::new(),
            usage: Vec::new(),
        }
    }
}

impl From<FromAgentV5> for FromAgent {
    fn from(m: FromAgentV5) -> FromAgent {
        match m {
            FromAgentV5::Events {
                started,
                finished,
                free,
            } => FromAgent::Events {
                started,
                finished: finished.into_iter().map(AttemptResult::from).collect(),
                free,
            },
            FromAgentV5::Heartbeat { running, queued } => FromAgent::Heartbeat { running, queued },
            FromAgentV5::Leaving { reason } => FromAgent::Leaving { reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protocol_5_agents_events_decode_and_convert() {
        let old = FromAgentV5::Events {
            started: vec![],
            finished: vec![AttemptResultV5 {
                attempt: 7,
                end: AttemptEnd::OutOfMemory,
                started_at_us: 1,
                ended_at_us: 2,
                peak_rss_bytes: 3,
                cpu_time_us: 4,
                stdout_tail: b"out".to_vec(),
                stderr_tail: b"err".to_vec(),
                stdout_bytes: 3,
                stderr_bytes: 3,
                exit_code: None,
                memory_limit_bytes: Some(120),
            }],
            free: Resources::cpus(1),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert!(
            postcard::from_bytes::<FromAgent>(&bytes).is_err(),
            "the current type cannot read it"
        );
        let back: FromAgentV5 = postcard::from_bytes(&bytes).unwrap();
        let FromAgent::Events { finished, .. } = FromAgent::from(back) else {
            panic!("events")
        };
        assert_eq!(finished[0].memory_limit_bytes, Some(120));
        assert_eq!(
            (finished[0].read_bytes, finished[0].write_bytes),
            (None, None)
        );
        assert!(finished[0].usage.is_empty() && finished[0].input_bytes.is_empty());
    }
}
