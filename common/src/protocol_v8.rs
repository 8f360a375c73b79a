//! What a broker of protocol 9 sends CLIs of protocols 7 and 8, so it keeps
//! serving them. Protocol 9 appended two fields to `analyze`'s
//! [`RunAnalysis`] (`transfers`, `transfers_unlisted`); postcard encodes
//! fields by position and a CLI refuses a message with bytes left over, so
//! an older CLI's `Analyze` reply is encoded here without them. Every other
//! reply reads the same.
//!
//! Must not hold anything but the older shape of the replies that changed;
//! when [`crate::handshake::CLI_PROTOCOL_OLDEST`] passes 8, it goes.

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::protocol::{Response, RunAnalysis};

/// The first protocol whose CLIs read [`Response`] as it is now.
pub const CLI_REPLIES_SINCE: u16 = 9;

/// [`Response::Analyze`]'s position among the variants (postcard tags an
/// enum by it; a test checks it against the encoding of the real one).
const ANALYZE_VARIANT: u32 = 6;

/// A reply as a CLI of `protocol` reads it.
#[derive(Debug)]
pub enum Reply {
    Current(Response),
    /// An `analyze` reply for a CLI of protocol 7 or 8: without the
    /// transfers (the CLI prints the rest as before).
    AnalyzeV8(RunAnalysis),
}

impl Reply {
    /// `resp` for a CLI speaking `protocol`.
    pub fn for_cli(resp: Response, protocol: u16) -> Reply {
        match resp {
            Response::Analyze(a) if protocol < CLI_REPLIES_SINCE => Reply::AnalyzeV8(a),
            other => Reply::Current(other),
        }
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reply::Current(r) => r.serialize(s),
            Reply::AnalyzeV8(a) => {
                s.serialize_newtype_variant("Response", ANALYZE_VARIANT, "Analyze", &AnalysisV8(a))
            }
        }
    }
}

/// [`RunAnalysis`] as protocol 8 encodes it: every field but the two that
/// protocol 9 appended, in their order.
struct AnalysisV8<'a>(&'a RunAnalysis);

impl Serialize for AnalysisV8<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut st = s.serialize_struct("RunAnalysis", 11)?;
        st.serialize_field("run", &a.run)?;
        st.serialize_field("name", &a.name)?;
        st.serialize_field("state", &a.state)?;
        st.serialize_field("total", &a.total)?;
        st.serialize_field("succeeded", &a.succeeded)?;
        st.serialize_field("failed", &a.failed)?;
        st.serialize_field("cancelled", &a.cancelled)?;
        st.serialize_field("unfinished", &a.unfinished)?;
        st.serialize_field("failed_tasks", &a.failed_tasks)?;
        st.serialize_field("cancelled_jobs", &a.cancelled_jobs)?;
        st.serialize_field("next", &a.next)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CancelledJob, FailedTask, TaskTransfer};

    fn analysis() -> RunAnalysis {
        RunAnalysis {
            run: 3,
            name: "wf".into(),
            state: "failed".into(),
            total: 4,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
            unfinished: 1,
            failed_tasks: vec![FailedTask {
                task: 9,
                path: "3/a/0".into(),
                item: Some("x".into()),
                state: "failed".into(),
                reason: "exit code 2".into(),
                argv: vec!["false".into()],
                attempts: vec![],
                stderr_tail: "boom".into(),
                stdout_tail: String::new(),
            }],
            cancelled_jobs: vec![CancelledJob {
                job: "b".into(),
                tasks: 1,
                first: vec![],
                cause: None,
            }],
            next: Some(9),
            transfers: vec![TaskTransfer {
                task: 10,
                path: "3/c/0".into(),
                item: None,
                direction: "in".into(),
                agent: "a".into(),
                host: "h".into(),
                via: Some("broker".into()),
                files: Some(2),
                done_bytes: Some(1),
                total_bytes: None,
                error: None,
            }],
            transfers_unlisted: 5,
        }
    }

    /// The old shape is the new one without its last two fields: what the
    /// current `Response::Analyze` encodes to, with them empty, minus their
    /// two bytes (an empty list, a zero).
    #[test]
    fn an_older_cli_gets_the_analysis_without_the_transfers() {
        let full = analysis();
        let old = postcard::to_stdvec(&Reply::for_cli(Response::Analyze(full.clone()), 8)).unwrap();
        let mut bare = full.clone();
        bare.transfers.clear();
        bare.transfers_unlisted = 0;
        let now = postcard::to_stdvec(&Response::Analyze(bare)).unwrap();
        assert_eq!(now[now.len() - 2..], [0, 0]);
        assert_eq!(old, now[..now.len() - 2]);
        // A current CLI gets every field.
        let current = postcard::to_stdvec(&Reply::for_cli(Response::Analyze(full.clone()), 9));
        let decoded: Response = crate::frame::decode_body(&current.unwrap()).unwrap();
        match decoded {
            Response::Analyze(a) => {
                assert_eq!(a.transfers, full.transfers);
                assert_eq!(a.transfers_unlisted, 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_replies_are_the_same_for_every_cli() {
        let r = Response::ShuttingDown;
        assert_eq!(
            postcard::to_stdvec(&Reply::for_cli(r.clone(), 7)).unwrap(),
            postcard::to_stdvec(&r).unwrap()
        );
    }
}
