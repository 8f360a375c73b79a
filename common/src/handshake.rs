//! Peers of other versions: which protocol versions a broker serves, the part
//! of every `Hello` that never changes, and the one line that tells a peer the
//! broker cannot serve which version to install.
//!
//! Owns the compatibility rule, not the messages (those are
//! [`crate::protocol`]'s) and not the connection (the broker's `accept`).
//!
//! The rule: a broker serves agents whose protocol is in
//! [`AGENT_PROTOCOL_OLDEST`]`..=`[`PROTOCOL_VERSION`] and CLIs in
//! [`CLI_PROTOCOL_OLDEST`]`..=`[`PROTOCOL_VERSION`]. A release that changes a
//! message bumps [`PROTOCOL_VERSION`]; it keeps the oldest agent protocol where
//! it was when the agents' messages did not change (or when the broker sends
//! older agents only what they understand, by their `hello.protocol`), so a
//! newer broker keeps serving the agents of the previous release already on the
//! nodes. Every `Hello`, in every version, starts with [`HelloHead`]: the
//! broker reads the versions before it tries the rest, so even a peer whose
//! hello it can no longer decode hears which version to install.

use serde::Deserialize;

use crate::protocol::PROTOCOL_VERSION;

/// The oldest protocol whose agents this broker serves. Protocol 3 → 4 changed
/// only CLI messages (paged `status`, `analyze`, `logs`); 4 → 5 added two
/// fields to an agent's `AttemptResult`, which the broker reads from older
/// agents as `protocol_v4` encodes it; 5 → 6 added four more (I/O bytes,
/// input sizes, the usage series: `protocol_v5`); 6 → 7 changed only a CLI
/// message (`Submit`'s `JobDef`). `AgentHello`, `HelloReply` and `ToAgent`
/// are the same since 3.
pub const AGENT_PROTOCOL_OLDEST: u16 = 3;
/// The oldest protocol whose CLIs this broker serves (5 added fields to the
/// replies of `submit`, `status`, `why`, `analyze` and `logs`, which a
/// protocol 4 CLI cannot read; 7 added `after_per` to the `JobDef` a CLI
/// submits, which postcard reads by position, so a protocol 6 CLI's submit
/// would be misread). Replies changed since are sent to older CLIs in their
/// own shape: `why`'s reasons of 8 (`Reason::for_protocol_7`), `analyze`'s
/// transfers of 9 (`protocol_v8`).
pub const CLI_PROTOCOL_OLDEST: u16 = 7;

/// This build's release (the workspace's crate version).
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");
/// Which portable build this is when `scripts/dist.sh` built it (its
/// `SCALABLE_BUILD`, e.g. `x86_64-linux-gnu, glibc >= 2.17`); `None` for a
/// development build, which needs a glibc as new as its build host's.
pub const BUILD: Option<&str> = option_env!("SCALABLE_BUILD");

/// The `--version` text: the release, and for a dist build which one.
pub fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| match BUILD {
        Some(b) => format!("{RELEASE} ({b})"),
        None => RELEASE.to_string(),
    })
}

/// Who says hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Cli,
}

impl Role {
    fn oldest(self) -> u16 {
        match self {
            Role::Agent => AGENT_PROTOCOL_OLDEST,
            Role::Cli => CLI_PROTOCOL_OLDEST,
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Role::Agent => "scalable-agent",
            Role::Cli => "scalable",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Cli => "cli",
        }
    }
}

/// The versions a peer states: its protocol and its release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PeerVersion {
    pub protocol: u16,
    pub release: String,
}

/// The start of every `Hello` of every protocol version: the variant (agent or
/// CLI), then `protocol: u16`, then the peer's release. Fields after these may
/// change between versions; these never do (a test checks the current
/// `Hello` against it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum HelloHead {
    Agent(PeerVersion),
    Cli(PeerVersion),
}

impl HelloHead {
    /// Reads the head of an encoded `Hello` (the frame's body), ignoring what follows.
    pub fn decode(body: &[u8]) -> Result<HelloHead, String> {
        postcard::take_from_bytes::<HelloHead>(body)
            .map(|(head, _rest)| head)
            .map_err(|e| e.to_string())
    }

    pub fn role(&self) -> Role {
        match self {
            HelloHead::Agent(_) => Role::Agent,
            HelloHead::Cli(_) => Role::Cli,
        }
    }

    pub fn version(&self) -> &PeerVersion {
        match self {
            HelloHead::Agent(v) | HelloHead::Cli(v) => v,
        }
    }
}

/// `None` when this broker serves a peer of `role` speaking `peer`'s protocol;
/// otherwise the one line the peer is refused with, naming what to install.
pub fn refusal(role: Role, peer: &PeerVersion) -> Option<String> {
    refusal_by(role, peer, PROTOCOL_VERSION, RELEASE)
}

/// [`refusal`] for a broker speaking `protocol` at `release` (tests vary them).
fn refusal_by(role: Role, peer: &PeerVersion, protocol: u16, release: &str) -> Option<String> {
    let oldest = role.oldest();
    if (oldest..=protocol).contains(&peer.protocol) {
        return None;
    }
    let served = if oldest == protocol {
        format!("protocol {protocol}")
    } else {
        format!("protocols {oldest} to {protocol}")
    };
    let noun = role.noun();
    let binary = role.binary();
    let theirs = shown_release(&peer.release);
    let fix = if peer.protocol > protocol {
        format!("install {binary} {release}, or upgrade the broker to {theirs}")
    } else {
        format!("install {binary} {release}")
    };
    Some(format!(
        "{noun} {theirs} speaks protocol {}; this broker (scalable {release}) serves {noun}s of {served}: {fix}",
        peer.protocol
    ))
}

/// A peer's release as a log line may show it: its own claim, so only
/// printable ASCII and only so much.
fn shown_release(release: &str) -> String {
    let shown: String = release
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(RELEASE_SHOWN_CHARS_MAX)
        .collect();
    if shown.is_empty() {
        "(no release)".into()
    } else {
        shown
    }
}

/// The most of a peer's release a refusal repeats.
const RELEASE_SHOWN_CHARS_MAX: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentHello, CliHello, Hello};
    use crate::resources::Resources;

    fn agent_hello(protocol: u16) -> Hello {
        Hello::Agent(AgentHello {
            protocol,
            agent_version: "0.0.7".into(),
            token: "t".repeat(64),
            name: "a".into(),
            hostname: "h".into(),
            resources: Resources::default(),
            tags: vec!["x".into()],
            runtimes: vec![],
            limit_mode: "sampling".into(),
            lifetime_ms: Some(5),
            held_attempts: vec![1, 2],
            pilot_id: None,
            resume_agent: Some(9),
        })
    }

    fn peer(protocol: u16, release: &str) -> PeerVersion {
        PeerVersion {
            protocol,
            release: release.into(),
        }
    }

    #[test]
    fn the_head_of_every_hello_is_its_role_protocol_and_release() {
        let body = postcard::to_stdvec(&agent_hello(3)).unwrap();
        assert_eq!(
            HelloHead::decode(&body).unwrap(),
            HelloHead::Agent(peer(3, "0.0.7"))
        );
        let cli = Hello::Cli(CliHello {
            protocol: PROTOCOL_VERSION,
            cli_version: "1.2.3".into(),
            token: "t".into(),
        });
        let body = postcard::to_stdvec(&cli).unwrap();
        let head = HelloHead::decode(&body).unwrap();
        assert_eq!(head, HelloHead::Cli(peer(PROTOCOL_VERSION, "1.2.3")));
        assert_eq!(head.role(), Role::Cli);
    }

    #[test]
    fn a_hello_whose_rest_no_longer_decodes_still_gives_its_head() {
        // A future agent's hello: the head, then fields this build cannot read.
        let mut body = postcard::to_stdvec(&(0u8, 9u16, "0.9.0")).unwrap();
        body.extend_from_slice(&[0xff; 7]);
        assert_eq!(
            HelloHead::decode(&body).unwrap(),
            HelloHead::Agent(peer(9, "0.9.0"))
        );
        assert!(HelloHead::decode(&[0x07]).is_err());
    }

    #[test]
    fn agents_of_the_previous_protocol_are_served_older_ones_refused() {
        assert_eq!(refusal(Role::Agent, &peer(PROTOCOL_VERSION, RELEASE)), None);
        assert_eq!(
            refusal(Role::Agent, &peer(AGENT_PROTOCOL_OLDEST, "x")),
            None
        );
        assert_eq!(
            refusal_by(Role::Agent, &peer(2, "0.0.2"), 4, "0.1.0").as_deref(),
            Some("agent 0.0.2 speaks protocol 2; this broker (scalable 0.1.0) serves agents of protocols 3 to 4: install scalable-agent 0.1.0")
        );
    }

    #[test]
    fn a_newer_peer_is_told_both_ways_out() {
        assert_eq!(
            refusal_by(Role::Agent, &peer(5, "0.2.0"), 4, "0.1.0").as_deref(),
            Some("agent 0.2.0 speaks protocol 5; this broker (scalable 0.1.0) serves agents of protocols 3 to 4: install scalable-agent 0.1.0, or upgrade the broker to 0.2.0")
        );
        assert_eq!(
            refusal_by(Role::Cli, &peer(3, "0.0.3"), CLI_PROTOCOL_OLDEST, "0.1.0").as_deref(),
            Some(format!("cli 0.0.3 speaks protocol 3; this broker (scalable 0.1.0) serves clis of protocol {CLI_PROTOCOL_OLDEST}: install scalable 0.1.0").as_str())
        );
    }

    #[test]
    fn a_peer_cannot_stretch_the_line() {
        let long = "9".repeat(10_000);
        let line = refusal(Role::Agent, &peer(1, &format!("{long}\n"))).unwrap();
        assert!(line.len() < 300, "{line}");
        assert!(!line.contains('\n'));
    }
}
