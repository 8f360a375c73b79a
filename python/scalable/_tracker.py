"""Settling futures from what the broker and the run directory say.

Owns: one poll for every outstanding future: a scan of the run directory for
outcome files (a promoted `.out` is the counted attempt's value), one
`scalable status --json` for every run's per-job counts, and one
`scalable analyze RUN --json` only when a run's failed or cancelled count grew.
A job whose tasks are all final settles every future still open in it. Must
not submit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _payload
from ._cli import Cli
from .errors import BrokerUnreachable, RemoteTraceback, TaskFailed
from .futures import CommandResult, Future

_OPEN_STATES = ("waiting", "ready", "assigned", "running")


def remote_exception(exc: Optional[BaseException], summary: str, tb: str) -> BaseException:
    """The exception raised on the agent, with its traceback text attached
    (`__cause__`, `remote_traceback`, and a note on Python 3.11+)."""
    err: BaseException = exc if exc is not None else TaskFailed("?", summary)
    err.__cause__ = RemoteTraceback(tb)
    setattr(err, "remote_traceback", tb)
    if hasattr(err, "add_note"):
        err.add_note(f"remote traceback:\n{tb}")
    return err


class Tracker:
    def __init__(self, cli: Cli, rundir: str) -> None:
        self.cli = cli
        self.rundir = rundir
        self.runs: Dict[int, List[Future]] = {}
        self.bad_seen: Dict[int, int] = {}
        self.failed: Dict[int, Dict[str, Any]] = {}
        self.cancel_causes: Dict[int, Dict[str, str]] = {}
        self.unreachable_since: Optional[float] = None
        # Submitted futures arrive from any thread; only the pump reads `runs`.
        self._lock = threading.Lock()
        self._incoming: List[Tuple[int, List[Future]]] = []

    def add(self, run: int, futures: List[Future]) -> None:
        with self._lock:
            self._incoming.append((run, futures))

    def outstanding(self) -> int:
        with self._lock:
            waiting = sum(len(fs) for _, fs in self._incoming)
        return waiting + sum(len(fs) for fs in self.runs.values())

    def poll(self, full: bool = True) -> int:
        """One round; returns how many futures it settled. Not `full`: only
        the run directory is looked at (no CLI call)."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for run, fs in incoming:
            self.runs.setdefault(run, []).extend(fs)
        settled = self._settle_outcomes()
        self.runs = {r: fs for r, fs in self.runs.items() if fs}
        if not self.runs or not full:
            return settled
        try:
            statuses = {s["run"]: s for s in self.cli.run_json(["status"])}
        except BrokerUnreachable as err:
            return settled + self._unreachable(err)
        self.unreachable_since = None
        for run in list(self.runs):
            status = statuses.get(run)
            if status is not None:
                settled += self._settle_run(run, status)
        self.runs = {r: fs for r, fs in self.runs.items() if fs}
        return settled

    def _unreachable(self, err: BrokerUnreachable) -> int:
        """A broker away for a moment (a restart) is waited for; away longer
        than the client's timeout, every open future raises the error."""
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
        if now - self.unreachable_since < self.cli.timeout:
            return 0
        n = sum(int(f._set_error(err)) for fs in self.runs.values() for f in fs)
        self.runs = {}
        return n

    def _settle_outcomes(self) -> int:
        try:
            present = {e.name for e in os.scandir(self.rundir) if e.name.endswith(".out")}
        except FileNotFoundError:
            return 0
        n = 0
        for run, fs in self.runs.items():
            rest = []
            for f in fs:
                if f.out in present:
                    n += self._load(f)
                elif not f.done():
                    rest.append(f)
            self.runs[run] = rest
        return n

    def _load(self, f: Future) -> int:
        kind, value = _payload.read(os.path.join(self.rundir, f.out))[:2]
        return int(f._set_result(value)) if kind == "ok" else 0

    def _settle_run(self, run: int, status: Dict[str, Any]) -> int:
        counts = status["counts"]
        bad = counts["failed"] + counts["cancelled"]
        if bad > self.bad_seen.get(run, 0):
            self.failed[run] = self._analyze(run)
            self.bad_seen[run] = bad  # only once answered: a failed call is asked again
        jobs_final = {
            j["name"]: j["counts"] for j in status["jobs"] if not any(j["counts"][s] for s in _OPEN_STATES)
        }
        failed, causes = self.failed.get(run, {}), self.cancel_causes.get(run, {})
        n, rest = 0, []
        for f in self.runs[run]:
            entry = failed.get(f"{run}/{f.name}/{f.index or 0}")
            if entry is not None:
                n += self._fail(f, entry)
            elif f.name in jobs_final:
                n += self._settle_final(f, jobs_final[f.name], causes)
            else:
                rest.append(f)
        self.runs[run] = [f for f in rest if not f.done()]
        return n

    def _settle_final(self, f: Future, counts: Dict[str, int], causes: Dict[str, str]) -> int:
        """A future of a job with every task final: its value, its exception
        (a failed task past the first page of `analyze`), or cancelled. A
        command's job has one task: its counts say whether it succeeded."""
        if not f.out:
            if counts["succeeded"] + counts["cached"] > 0:
                return int(f._set_result(CommandResult(f.task, self.cli)))
            return int(f._set_cancelled(causes.get(f.name, "cancelled")))
        if os.path.exists(os.path.join(self.rundir, f.out)):
            return self._load(f)
        found = _payload.latest_error(self.rundir, f.out)
        if found is not None:
            return int(f._set_error(remote_exception(*found)))
        cause = causes.get(f.name, "its run or a dependency was cancelled or failed")
        return int(f._set_cancelled(cause))

    def _analyze(self, run: int) -> Dict[str, Any]:
        report = self.cli.run_json(["analyze", str(run)], data_on_1=True)
        by_path = {t["path"]: t for t in report.get("failed_tasks", [])}
        self.cancel_causes[run] = {
            job["job"]: cause_text(job.get("cause")) for job in report.get("cancelled_jobs") or []
        }
        return by_path

    def _fail(self, f: Future, entry: Dict[str, Any]) -> int:
        if entry.get("state") == "cancelled":
            return int(f._set_cancelled(str(entry.get("reason") or "cancelled")))
        found = _payload.latest_error(self.rundir, f.out)
        if found is not None:
            return int(f._set_error(remote_exception(*found)))
        err = TaskFailed(entry["path"], str(entry.get("reason", "failed")), entry.get("stderr_tail") or "")
        return int(f._set_error(err))


def cause_text(cause: Any) -> str:
    """A `Cancellation` as `analyze --json` gives it, in a few words."""
    if cause is None:
        return "cancelled"
    if isinstance(cause, str):
        return cause
    return json.dumps(cause, separators=(",", ":"))
