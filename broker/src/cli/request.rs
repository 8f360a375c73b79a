//! The one way a command asks the broker something: connect, send a
//! `Request`, and unpack the `Response` variant the command expects, or fail
//! with one line that names what came back instead.
//!
//! Owns: the [`Reply`] trait (which `Response` variant each reply type is) and
//! the named replies that are structs on the wire (`Submitted`, `Resumed`,
//! `Cancelled`).
//!
//! Must not: print or decide exit codes beyond the error it returns; the
//! connection itself (TLS, hello, timeouts) is `crate::client`'s.

use std::path::Path;

use scalable_common::explain::Unrunnable;
use scalable_common::protocol::{
    AgentInfo, Page, PilotInfo, ReportPage, Request, Response, RunAnalysis, RunId, RunStats,
    RunStatus, ScaleReport, TaskLogs, WhyAnswer,
};
use scalable_common::scaling::ScalingDecisionInfo;

use crate::cli_error::CliError;
use crate::client::Client;

/// A reply a command expects: the payload of one `Response` variant.
pub trait Reply: Sized {
    /// The variant's name, for the error when another one came back.
    const VARIANT: &'static str;
    /// The payload, or the name of the variant that came instead.
    fn unpack(r: Response) -> Result<Self, &'static str>;
}

/// Implements [`Reply`] for the payload of a one-field `Response` variant.
macro_rules! reply {
    ($payload:ty, $variant:ident) => {
        impl Reply for $payload {
            const VARIANT: &'static str = stringify!($variant);
            fn unpack(r: Response) -> Result<Self, &'static str> {
                match r {
                    Response::$variant(x) => Ok(x),
                    other => Err(variant(&other)),
                }
            }
        }
    };
}

reply!(Page<RunStatus>, Status);
reply!(Vec<AgentInfo>, Agents);
reply!(Vec<PilotInfo>, Pilots);
reply!(RunStats, Stats);
reply!(RunAnalysis, Analyze);
reply!(TaskLogs, Logs);
reply!(WhyAnswer, Why);
reply!(ScaleReport, Scaled);
reply!(ReportPage, Report);

/// `Response::Advice`: an advisor's answer as JSON.
pub struct AdviceJson(pub String);

impl Reply for AdviceJson {
    const VARIANT: &'static str = "Advice";
    fn unpack(r: Response) -> Result<Self, &'static str> {
        match r {
            Response::Advice { json } => Ok(AdviceJson(json)),
            other => Err(variant(&other)),
        }
    }
}
reply!(Page<ScalingDecisionInfo>, Scaling);
reply!(Page<String>, Export);

/// `Response::Submitted`: the new run, its task count, and the jobs nothing
/// could ever run.
pub struct Submitted {
    pub run: RunId,
    pub tasks: u64,
    pub unrunnable: Vec<Unrunnable>,
}

impl Reply for Submitted {
    const VARIANT: &'static str = "Submitted";
    fn unpack(r: Response) -> Result<Self, &'static str> {
        match r {
            Response::Submitted {
                run,
                tasks,
                unrunnable,
            } => Ok(Submitted {
                run,
                tasks,
                unrunnable,
            }),
            other => Err(variant(&other)),
        }
    }
}

/// `Response::Resumed`: the run and how many of its tasks run again.
pub struct Resumed {
    pub run: RunId,
    pub tasks: u64,
}

impl Reply for Resumed {
    const VARIANT: &'static str = "Resumed";
    fn unpack(r: Response) -> Result<Self, &'static str> {
        match r {
            Response::Resumed { run, tasks } => Ok(Resumed { run, tasks }),
            other => Err(variant(&other)),
        }
    }
}

/// `Response::Cancelled`: how many tasks the cancel reached.
pub struct Cancelled {
    pub tasks: u64,
}

impl Reply for Cancelled {
    const VARIANT: &'static str = "Cancelled";
    fn unpack(r: Response) -> Result<Self, &'static str> {
        match r {
            Response::Cancelled { tasks } => Ok(Cancelled { tasks }),
            other => Err(variant(&other)),
        }
    }
}

/// Connects, then builds the request, sends it and unpacks the reply.
///
/// The request is built after connecting because that is the order a user has
/// always seen: an unreachable broker (exit 3) is reported before a malformed
/// argument (exit 2).
pub async fn request<T: Reply>(
    access: Option<&Path>,
    build: impl FnOnce() -> Result<Request, CliError>,
) -> Result<T, CliError> {
    let client = Client::connect(access).await?;
    let req = build()?;
    ask(&client, &req).await
}

/// A reply that comes in pages (`status`, `analyze`, `logs`).
pub trait Paged: Reply {
    /// Where the page after this one starts; `None` on the last page.
    fn next(&self) -> Option<u64>;
    /// Adds a later page to this one.
    fn merge(&mut self, later: Self);
}

impl Paged for Page<RunStatus> {
    fn next(&self) -> Option<u64> {
        self.next
    }
    fn merge(&mut self, later: Self) {
        self.items.extend(later.items);
        self.next = later.next;
    }
}

impl Paged for Page<ScalingDecisionInfo> {
    fn next(&self) -> Option<u64> {
        self.next
    }
    fn merge(&mut self, later: Self) {
        self.items.extend(later.items);
        self.next = later.next;
    }
}

impl Paged for RunAnalysis {
    fn next(&self) -> Option<u64> {
        self.next
    }
    fn merge(&mut self, later: Self) {
        self.failed_tasks.extend(later.failed_tasks);
        self.next = later.next;
    }
}

impl Paged for TaskLogs {
    fn next(&self) -> Option<u64> {
        self.next
    }
    fn merge(&mut self, later: Self) {
        self.stdout.extend(later.stdout);
        self.stderr.extend(later.stderr);
        self.next = later.next;
    }
}

/// Connects, then asks for every page of a paged reply and returns them
/// merged: `build(cursor)` makes the request of the page that starts after
/// `cursor` (`None`: the first page).
pub async fn request_pages<T: Paged>(
    access: Option<&Path>,
    build: impl Fn(Option<u64>) -> Result<Request, CliError>,
) -> Result<T, CliError> {
    let client = Client::connect(access).await?;
    let mut all: T = ask(&client, &build(None)?).await?;
    let mut cursor = all.next();
    while let Some(at) = cursor {
        let page: T = ask(&client, &build(Some(at))?).await?;
        cursor = page.next();
        // Keys and offsets only grow: a page that does not is a broken broker,
        // not a reason to ask forever.
        if cursor.is_some_and(|n| n <= at) {
            return Err(CliError::failed(format!(
                "the broker sent a page that does not advance (from {at} to {})",
                cursor.unwrap_or_default()
            )));
        }
        all.merge(page);
    }
    Ok(all)
}

/// Sends `req` on an open connection and unpacks the reply (for commands that
/// ask more than once, such as `wait`).
pub async fn ask<T: Reply>(client: &Client, req: &Request) -> Result<T, CliError> {
    let resp = client.call(req).await?;
    T::unpack(resp).map_err(|got| unexpected(got, T::VARIANT))
}

/// The broker answered, but not with what the command asked for.
pub fn unexpected(got: &str, expected: &str) -> CliError {
    CliError::failed(format!(
        "the broker sent an unexpected response ({got} where {expected} was expected; are the cli and broker the same version?)"
    ))
}

/// The name of a response's variant.
fn variant(r: &Response) -> &'static str {
    match r {
        Response::Submitted { .. } => "Submitted",
        Response::Status(_) => "Status",
        Response::Resumed { .. } => "Resumed",
        Response::Cancelled { .. } => "Cancelled",
        Response::Agents(_) => "Agents",
        Response::Stats(_) => "Stats",
        Response::Analyze(_) => "Analyze",
        Response::Logs(_) => "Logs",
        Response::ShuttingDown => "ShuttingDown",
        Response::Error { .. } => "Error",
        Response::Why(_) => "Why",
        Response::Scaled(_) => "Scaled",
        Response::Pilots(_) => "Pilots",
        Response::Report(_) => "Report",
        Response::Advice { .. } => "Advice",
        Response::Scaling(_) => "Scaling",
        Response::Export(_) => "Export",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_unpacks_its_own_variant_only() {
        let ok = Cancelled::unpack(Response::Cancelled { tasks: 3 });
        assert_eq!(ok.ok().map(|c| c.tasks), Some(3));
        let wrong = <Page<RunStatus>>::unpack(Response::Cancelled { tasks: 3 });
        assert_eq!(wrong.err(), Some("Cancelled"));
        let s = Submitted::unpack(Response::Submitted {
            run: 4,
            tasks: 9,
            unrunnable: vec![],
        });
        assert_eq!(s.ok().map(|s| (s.run, s.tasks)), Some((4, 9)));
        assert!(Resumed::unpack(Response::ShuttingDown).is_err());
    }

    #[test]
    fn the_error_names_what_came_back() {
        let e = unexpected("Pilots", <Page<RunStatus>>::VARIANT);
        assert_eq!(e.code, scalable_common::exit::ExitCode::Failed);
        assert_eq!(
            e.to_string(),
            "error: the broker sent an unexpected response (Pilots where Status was expected; are the cli and broker the same version?)"
        );
    }
}
