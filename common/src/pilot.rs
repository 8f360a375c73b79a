//! A pilot's phase as the broker records it (SPEC §8): the `state` of
//! `scalable pilots`, of its JSON and of the `pilots` table.
//!
//! This module owns the phases and their one spelling, which is stored and
//! shown as it is and travels as a string on the wire (so the protocol and
//! the JSON are the same as when the state was a free string). It must not
//! decide transitions: the broker's fleet does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a pilot is: `submitted` (the provider took it), `queued`/`running`
/// (as the provider says), `connected` (its agent dialled in), `draining`
/// (asked to leave), and finally `ended` (the provider no longer runs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PilotPhase {
    Submitted,
    Queued,
    Running,
    Connected,
    Draining,
    Ended,
}

impl PilotPhase {
    pub const ALL: [PilotPhase; 6] = [
        PilotPhase::Submitted,
        PilotPhase::Queued,
        PilotPhase::Running,
        PilotPhase::Connected,
        PilotPhase::Draining,
        PilotPhase::Ended,
    ];

    /// The word stored, shown and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            PilotPhase::Submitted => "submitted",
            PilotPhase::Queued => "queued",
            PilotPhase::Running => "running",
            PilotPhase::Connected => "connected",
            PilotPhase::Draining => "draining",
            PilotPhase::Ended => "ended",
        }
    }

    /// The phase spelled `text`, as [`PilotPhase::as_str`] writes it.
    pub fn parse(text: &str) -> Option<PilotPhase> {
        PilotPhase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Not ended: the broker still reconciles it with the provider.
    pub fn is_live(self) -> bool {
        self != PilotPhase::Ended
    }
}

impl fmt::Display for PilotPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PilotPhase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PilotPhase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PilotPhase::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown pilot state {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_once_and_read_back() {
        for p in PilotPhase::ALL {
            assert_eq!(PilotPhase::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(PilotPhase::parse("Ended"), None);
        assert!(!PilotPhase::Ended.is_live() && PilotPhase::Draining.is_live());
    }

    #[test]
    fn json_and_wire_are_those_of_the_string() {
        for p in PilotPhase::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                serde_json::to_string(p.as_str()).unwrap()
            );
            let bytes = postcard::to_allocvec(&p).unwrap();
            assert_eq!(
                bytes,
                postcard::to_allocvec(&p.as_str().to_string()).unwrap()
            );
            assert_eq!(postcard::from_bytes::<PilotPhase>(&bytes).unwrap(), p);
        }
        assert!(serde_json::from_str::<PilotPhase>("\"lost\"").is_err());
    }
}
