//! CLI requests: one function per `Request` kind, each asking the core (or
//! the fleet) and returning the reply, or a read to run on the store's thread.
//!
//! Nothing here sends: every reply goes back as a [`Deferred`] and is
//! released only after the batch's writes commit (`routing`). It must not
//! read or write the store directly, and it decides nothing the core should.

use scalable_common::explain::{AgentShape, Reason};
use scalable_common::manifest::Manifest;
use scalable_common::protocol::{
    Page, Request, Response, RunId, RunRef, TaskId, TaskLogs, TaskRef, REPLY_PAGE_BYTES_MAX,
    TRANSFERS_SHOWN_MAX,
};
use tokio::sync::{mpsc, oneshot};

use super::fleet_io::{self, FleetCtx, ScaleReq};
use super::routing::{Deferred, Query};
use super::transfer_board::TransferBoard;
use super::transfer_list;
use super::{bad, now_ms, task_refs, CoreMsg};
use crate::core::{Core, StoreOp, SubmitPlan};
use crate::paging::PageBuilder;
use crate::{report, store, submit};

/// What a request may use besides the request itself.
pub(super) struct RequestCtx<'a> {
    pub core: &'a mut Core,
    pub fleet: Option<&'a mut FleetCtx>,
    pub manifest: Option<&'a Manifest>,
    /// The agents this broker could still start (`crate::shapes`).
    pub shapes: &'a [AgentShape],
    pub to_core: &'a mpsc::WeakUnboundedSender<CoreMsg>,
    /// Tells `run` to stop the broker (`Request::Shutdown`).
    pub stop: &'a mpsc::UnboundedSender<()>,
    /// Store writes of this batch that do not come from the core (pilots).
    pub ops: &'a mut Vec<StoreOp>,
    /// Transfers under way (`why` and `analyze` of tasks being staged).
    pub transfers: &'a std::sync::Arc<super::transfer_board::TransferBoard>,
    pub now: u64,
}

/// An answer now, or a read behind the batch's writes.
enum Answer {
    Now(Response),
    Read(Query),
}

/// Handles one CLI request; `None` when the reply travels on (a `scale`
/// waiting for its provider) and is sent later.
pub(super) fn handle(
    cx: RequestCtx<'_>,
    req: Request,
    reply: oneshot::Sender<Response>,
) -> Option<Deferred> {
    let now = cx.now;
    let answer = match req {
        // `cli_session` plans every submit off the core and sends
        // `CoreMsg::Submit`; one arriving here unplanned is planned here.
        Request::Submit(s) => {
            let plan = submit::plan(s, cx.manifest);
            Answer::Now(submit(cx.core, cx.shapes, plan, now))
        }
        Request::Status { run, after } => Answer::Now(status(cx.core, run, after, now)),
        Request::Agents => Answer::Now(Response::Agents(cx.core.agent_infos())),
        Request::Cancel { run, task } => Answer::Now(cancel(cx.core, run, task, now)),
        Request::Resume { run } => Answer::Now(resume(cx.core, &run, now)),
        Request::Stats { run } => stats(cx.core, &run),
        Request::Analyze { run, after } => analyze(cx.core, cx.transfers, &run, after),
        Request::Logs {
            task,
            attempt,
            from,
        } => logs(cx.core, task, attempt, from),
        Request::Why { task } => why(cx.core, cx.transfers, &task, now),
        Request::Report { run, after } => report(cx.core, &run, after),
        // `cli_session` answers these off the core; they never come here.
        Request::Advise(_) | Request::Tune(_) => Answer::Now(bad(
            "advise and tune are answered by the advisor service".into(),
        )),
        Request::Export { run, after } => export(cx.core, &run, after),
        Request::Pilots => Answer::Now(fleet_io::pilots(cx.fleet.as_deref())),
        Request::Scaling {
            run,
            since_ms,
            after,
        } => scaling(cx.core, run, since_ms, after),
        Request::Shutdown => Answer::Now(shutdown(cx.stop)),
        Request::Scale {
            target,
            tag,
            change,
            force,
            dry_run,
        } => {
            let req = ScaleReq {
                target,
                tag,
                change,
                force,
                dry_run,
            };
            return fleet_io::scale(cx.core, cx.fleet, req, reply, cx.to_core, cx.ops);
        }
    };
    Some(match answer {
        Answer::Now(resp) => Deferred::Reply(reply, resp),
        Answer::Read(query) => Deferred::Query(reply, query),
    })
}

/// Adds a planned run to the core: the reply to a submit, naming the jobs
/// that nothing connected, and nothing this broker can start (`shapes`),
/// could ever run.
pub(super) fn submit(
    core: &mut Core,
    shapes: &[AgentShape],
    plan: Result<SubmitPlan, String>,
    now: u64,
) -> Response {
    match plan {
        Ok(plan) => match core.submit(plan, now) {
            Ok((run, tasks)) => Response::Submitted {
                run,
                tasks,
                unrunnable: core.unrunnable(run, shapes, now),
            },
            Err(e) => bad(e.to_string()),
        },
        Err(message) => bad(message),
    }
}

/// One run, or a page of every run after `after`.
fn status(core: &Core, run: Option<RunRef>, after: Option<RunId>, now: u64) -> Response {
    match run {
        None => {
            let mut page = PageBuilder::new(REPLY_PAGE_BYTES_MAX);
            for s in core.run_statuses_after(after, now) {
                if !page.push(s.run, s) {
                    break;
                }
            }
            Response::Status(page.finish())
        }
        Some(r) => match resolve_run(core, &r).and_then(|id| core.run_status(id, now)) {
            Some(s) => Response::Status(Page {
                items: vec![s],
                next: None,
            }),
            None => bad(no_run(&r)),
        },
    }
}

fn cancel(core: &mut Core, run: Option<RunRef>, task: Option<TaskRef>, now: u64) -> Response {
    let n = match (run, task) {
        (Some(r), _) => resolve_run(core, &r).and_then(|id| core.cancel_run(id, now)),
        (None, Some(t)) => match task_refs::resolve(core, &t) {
            Ok(id) => core.cancel_task(id, now),
            Err(message) => return bad(message),
        },
        (None, None) => None,
    };
    match n {
        Some(tasks) => Response::Cancelled { tasks },
        None => bad("no such run or task (scalable status lists the runs)".into()),
    }
}

fn resume(core: &mut Core, run: &RunRef, now: u64) -> Response {
    match resolve_run(core, run) {
        Some(id) => match core.resume_run(id, now) {
            Ok(tasks) => Response::Resumed { run: id, tasks },
            Err(e) => bad(e),
        },
        None => bad(no_run(run)),
    }
}

fn stats(core: &Core, run: &RunRef) -> Answer {
    let Some(id) = resolve_run(core, run) else {
        return Answer::Now(bad(no_run(run)));
    };
    Answer::Read(Box::new(move |c| match store::run_stats(c, id, now_ms()) {
        Ok(s) => Response::Stats(s),
        Err(e) => bad(e.to_string()),
    }))
}

/// The scaler's stored decisions: of a run's lifetime, since a time, or all.
fn scaling(core: &Core, run: Option<RunRef>, since_ms: Option<u64>, after: Option<u64>) -> Answer {
    let filter = match (run, since_ms) {
        (Some(r), _) => match resolve_run(core, &r) {
            Some(id) => store::ScalingFilter::Run(id),
            None => return Answer::Now(bad(no_run(&r))),
        },
        (None, Some(ms)) => store::ScalingFilter::Since(ms),
        (None, None) => store::ScalingFilter::All,
    };
    Answer::Read(Box::new(move |c| {
        match store::scaling_decisions(c, filter, after, REPLY_PAGE_BYTES_MAX) {
            Ok(page) => Response::Scaling(page),
            Err(e) => bad(e.to_string()),
        }
    }))
}

/// A page of a run's analysis, read on the store's thread; the first page
/// also lists the transfers its tasks wait for (the board's, taken now) or
/// failed on.
fn analyze(
    core: &Core,
    board: &std::sync::Arc<TransferBoard>,
    run: &RunRef,
    after: Option<TaskId>,
) -> Answer {
    let Some(id) = resolve_run(core, run) else {
        return Answer::Now(bad(no_run(run)));
    };
    // Items and walltimes are the core's; the store keeps neither per task.
    let jobs = core.job_defs(id);
    let first = after.is_none();
    let waiting = if first {
        transfer_list::waiting(core, board, id)
    } else {
        Vec::new()
    };
    let board = board.clone();
    Answer::Read(Box::new(move |c| {
        let mut a = match store::run_analysis(c, id, after, &jobs) {
            Ok(a) => a,
            Err(e) => return bad(e.to_string()),
        };
        if first {
            let (rows, all) = match store::failed_transfers(c, id, &jobs, TRANSFERS_SHOWN_MAX) {
                Ok(found) => found,
                Err(e) => return bad(e.to_string()),
            };
            let failed_more = all.saturating_sub(rows.len() as u64);
            let failed = transfer_list::failed(rows, &board);
            (a.transfers, a.transfers_unlisted) =
                transfer_list::shown(waiting, failed, failed_more);
        }
        Response::Analyze(a)
    }))
}

/// A page of a run's report data, read on the store's thread; walltimes
/// are the core's (the store keeps none).
fn report(core: &Core, run: &RunRef, after: Option<u64>) -> Answer {
    let Some(id) = resolve_run(core, run) else {
        return Answer::Now(bad(no_run(run)));
    };
    let walltimes: Vec<(String, Option<u64>)> = core
        .job_defs(id)
        .iter()
        .map(|j| (j.name.clone(), j.walltime_ms))
        .collect();
    Answer::Read(Box::new(move |c| {
        match report::load::page(c, id, after, now_ms(), &walltimes) {
            Ok(p) => Response::Report(p),
            Err(e) => bad(e.to_string()),
        }
    }))
}

/// Logs are read from the store; the task is named against the core (it
/// knows every run's jobs and items, also after a restart).
fn logs(core: &Core, task: TaskRef, attempt: Option<u32>, from: u64) -> Answer {
    let id = match task_refs::resolve(core, &task) {
        Ok(id) => id,
        Err(message) => return Answer::Now(bad(message)),
    };
    let item = core.task_item(id);
    let walltime_ms = core.task_walltime_ms(id);
    Answer::Read(Box::new(move |c| {
        match store::task_logs(c, id, attempt, from, walltime_ms) {
            Ok(l) => Response::Logs(TaskLogs { item, ..l }),
            Err(e) => bad(e.to_string()),
        }
    }))
}

/// `scalable export`: a page of the run's telemetry rows, read from the store.
fn export(core: &Core, run: &RunRef, after: Option<u64>) -> Answer {
    let Some(id) = resolve_run(core, run) else {
        return Answer::Now(bad(no_run(run)));
    };
    Answer::Read(Box::new(move |c| {
        match store::export_page(c, id, after, now_ms(), REPLY_PAGE_BYTES_MAX) {
            Ok(page) => Response::Export(page),
            Err(e) => bad(e.to_string()),
        }
    }))
}

/// A task's answer, refined by the transfers under way (`transfer_board`); a
/// failed task's answer carries its failure from the store (its row's
/// reason: a staging failure names the object and the transfer's error), so
/// `why` says it in one line without `analyze`.
fn why(core: &Core, transfers: &TransferBoard, task: &TaskRef, now: u64) -> Answer {
    let (id, mut answer) = match task_refs::resolve(core, task).map(|id| (id, core.why(id, now))) {
        Ok((id, Some(answer))) => (id, answer),
        Ok((_, None)) => {
            return Answer::Now(bad(
                "no such task (name it RUN/JOB/INDEX, e.g. last/downscale/0)".into(),
            ))
        }
        Err(message) => return Answer::Now(bad(message)),
    };
    answer.reason = transfers.refine(answer.reason, core.task_attempt(id));
    if !matches!(&answer.reason, Reason::Ended { state, .. } if state == "failed") {
        return Answer::Now(Response::Why(answer));
    }
    Answer::Read(Box::new(move |c| {
        if let (Ok(Some(failure)), Reason::Ended { state, .. }) =
            (store::task_reason(c, id), &mut answer.reason)
        {
            *state = format!("failed ({failure})");
        }
        Response::Why(answer)
    }))
}

/// The reply is released with the batch; `run` stops the broker meanwhile.
fn shutdown(stop: &mpsc::UnboundedSender<()>) -> Response {
    let _ = stop.send(());
    Response::ShuttingDown
}

/// Resolves `last` against the live core.
fn resolve_run(core: &Core, run: &RunRef) -> Option<RunId> {
    match run {
        RunRef::Id(id) => Some(*id),
        RunRef::Last => core.last_run(),
    }
}

fn no_run(r: &RunRef) -> String {
    match r {
        RunRef::Id(id) => format!("no run {id} (scalable status lists the runs)"),
        RunRef::Last => "no runs yet (submit one with scalable submit)".into(),
    }
}
