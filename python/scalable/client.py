"""The client: Python functions and commands submitted as tasks, futures back.

Owns: the public calls (`submit`, `submit_command`, `map`, `gather`,
`as_completed`, `cancel`), the run directory where calls and outcomes live,
and the one background thread (the pump) that submits waiting calls in
batches (one run per batch) and polls for outcomes. Must not start brokers
or agents (the session does) and must not parse CLI output beyond `_cli`.

A dependency inside one batch is the workflow's `after`; a dependency on a
future of an earlier run is held on the client until that future succeeded
(SPEC §4 has no dependency across runs), then submitted with a `Ref` to its
outcome file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Sequence

from . import _payload
from ._cli import Cli
from ._jobs import Options, Pending, job_label, submit_batch, swap_futures, task_env, worker_argv
from ._tracker import Tracker
from .errors import ScalableError, TaskCancelled
from .futures import CommandResult, Future
from .futures import as_completed as _as_completed

if TYPE_CHECKING:
    from .history import History

# Outcome files are looked for every SCAN_EVERY, plus SCAN_PER_FUTURE per
# open future (a scan of a 10,000-task map's directory costs ~10 ms: done
# every 50 ms it would take a fifth of a core from the tasks); the broker is
# asked for counts (a CLI process) at most every STATUS_EVERY, which is what
# catches failures.
SCAN_EVERY = 0.05
SCAN_PER_FUTURE = 0.00005
SCAN_EVERY_MAX = 1.0
STATUS_EVERY = 0.5
COALESCE = 0.005


class Client:
    """Submits work to one broker; made by `ScalableSession.start()` or
    `Client(access=".scalable/access.json")` for a running broker."""

    def __init__(self, access: Optional[str] = None, rundir: Optional[str] = None, timeout: float = 30.0,
                 warm: Optional[bool] = None) -> None:
        """`warm`: run functions in the agent's pre-imported interpreter (a
        fork per call, imports paid once) rather than one interpreter per
        call; default on, `SCALABLE_WARM=0` turns it off."""
        self.cli = Cli(access, timeout)
        self.warm = os.environ.get("SCALABLE_WARM", "1") != "0" if warm is None else bool(warm)
        base = os.path.dirname(os.path.abspath(access)) if access else os.path.join(os.getcwd(), ".scalable")
        self.rundir = os.path.abspath(rundir or os.path.join(base, "python", uuid.uuid4().hex[:12]))
        os.makedirs(self.rundir, exist_ok=True)
        self._env = task_env()
        self._names = itertools.count(1)
        self._runs = itertools.count(1)
        self._pending: List[Pending] = []
        self._tracker = Tracker(self.cli, self.rundir)
        self._cond = threading.Condition()
        self._closed = False
        self._holds = 0  # open `batch()` blocks: the pump does not submit meanwhile
        self._pump = threading.Thread(target=self._pump_loop, name="scalable-pump", daemon=True)
        self._pump.start()

    # -- submitting --------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, tag: Optional[str] = None, cpus: Optional[int] = None,
               memory: Optional[str] = None, retries: Optional[int] = None, walltime: Optional[str] = None,
               gpus: Optional[int] = None, **kwargs: Any) -> Future:
        """Run `fn(*args, **kwargs)` as a task; futures among the arguments
        are waited for and replaced by their values."""
        key = f"f{next(self._names)}"
        deps: List[Future] = []
        args = swap_futures(args, self.rundir, deps)
        kwargs = swap_futures(kwargs, self.rundir, deps)
        _payload.write_call(self.rundir, key, fn, args, kwargs, os.getcwd())
        out = _payload.out_name(key, None)
        name = job_label(fn)
        job = self._job(name, worker_argv(f"{key}.in", out, warm=self.warm), [out], self.rundir)
        Options(tag, cpus, memory, gpus, retries, walltime).apply(job)
        fut = Future(self, name, out)
        self._enqueue(Pending(job, [fut], deps))
        return fut

    def submit_command(self, argv: Sequence[str], *, tag: Optional[str] = None, cpus: Optional[int] = None,
                       memory: Optional[str] = None, retries: Optional[int] = None,
                       walltime: Optional[str] = None, gpus: Optional[int] = None,
                       cwd: Optional[str] = None) -> Future:
        """Run a program (an argv list, no shell) as a task; the future's value
        is a `CommandResult`."""
        next(self._names)
        name = job_label(os.path.basename(str(argv[0])) if argv else "command")
        job = self._job(name, [str(a) for a in argv], [], os.path.abspath(cwd or os.getcwd()))
        Options(tag, cpus, memory, gpus, retries, walltime).apply(job)
        fut = Future(self, name, "")
        self._enqueue(Pending(job, [fut]))
        return fut

    def map(self, fn: Callable[..., Any], iterable: Iterable[Any], *, tag: Optional[str] = None,
            cpus: Optional[int] = None, memory: Optional[str] = None, retries: Optional[int] = None,
            walltime: Optional[str] = None, gpus: Optional[int] = None, **kwargs: Any) -> List[Future]:
        """`fn(item, **kwargs)` for every item, submitted as ONE job (a range
        over the items) before this returns."""
        items = list(iterable)
        if not items:
            return []
        if any(isinstance(i, Future) for i in items):
            raise TypeError("map: items may not be futures; use submit(fn, future) for dependencies")
        key = f"m{next(self._names)}"
        _payload.write_map(self.rundir, key, fn, items, kwargs, os.getcwd())
        out = f"{key}-{{{{ index }}}}.out"
        name = job_label(fn)
        job = self._job(name, worker_argv(f"{key}.in", out, "{{ index }}", self.warm), [out], self.rundir)
        job["range"] = f"0..={len(items) - 1}"
        Options(tag, cpus, memory, gpus, retries, walltime).apply(job)
        futures = [Future(self, name, _payload.out_name(key, i), i) for i in range(len(items))]
        self._submit_now([Pending(job, futures)])
        return futures

    @contextlib.contextmanager
    def batch(self) -> Iterator["Client"]:
        """Calls submitted inside go to the broker as one run when the block
        ends, so a future passed to a later call becomes an `after` there (the
        workflow builder: `with client.batch(): b = client.submit(g, client.submit(f))`)."""
        with self._cond:
            self._holds += 1
        try:
            yield self
        finally:
            with self._cond:
                self._holds -= 1
            self.flush()

    def flush(self) -> None:
        """Submit every call waiting for its batch now."""
        with self._cond:
            batch, self._pending = self._ready_batch()
        if batch:
            self._submit_now(batch)

    @property
    def history(self) -> "History":
        """Read-only access to this broker's runs, telemetry and reports."""
        from .history import History

        return History(self.cli.access)

    # -- waiting -----------------------------------------------------------

    def gather(self, futures: Iterable[Future], errors: str = "raise", timeout: Optional[float] = None) -> List[Any]:
        """Every future's value, in order; the first exception is raised
        (`errors="skip"` leaves failed ones out)."""
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for f in futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if errors == "skip":
                if f.exception(left) is None:
                    values.append(f.result())
            else:
                values.append(f.result(left))
        return values

    def as_completed(self, futures: Iterable[Future], timeout: Optional[float] = None) -> Iterator[Future]:
        return _as_completed(futures, timeout)

    def cancel(self, futures: Iterable[Future]) -> None:
        for f in futures:
            f.cancel()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._pump.join(timeout=5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- inside ------------------------------------------------------------

    def _job(self, name: str, command: List[str], outputs: List[str], workdir: str) -> dict:
        job = {"name": name, "command": command, "workdir": workdir, "env": self._env}
        if outputs:
            job["outputs"] = outputs
        return job

    def _enqueue(self, pending: Pending) -> None:
        with self._cond:
            if self._closed:
                raise ScalableError("the client is closed", "start a new session", 1)
            self._pending.append(pending)
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _ready_batch(self) -> tuple:
        """(calls to submit now, calls still held). Called with the lock held;
        a call whose dependency is held or still running elsewhere waits."""
        batch: List[Pending] = []
        held: List[Pending] = []
        in_batch = set()
        for p in self._pending:
            if any(d.done() and d.exception(0) is not None for d in p.deps):
                for f in p.futures:
                    f._set_error(TaskCancelled(f.task, "a dependency failed or was cancelled"))
                continue
            if all(d.done() or id(d) in in_batch for d in p.deps):
                batch.append(p)
                in_batch.update(id(f) for f in p.futures)
            else:
                held.append(p)
        return batch, held

    def _submit_now(self, batch: List[Pending]) -> None:
        futures = [f for p in batch for f in p.futures]
        try:
            run = submit_batch(self.cli, self.rundir, next(self._runs), batch)
        except ScalableError as err:
            for f in futures:
                f._set_error(err)
            return
        for f in futures:
            f.run = run
        self._tracker.add(run, futures)
        self._wake()

    def _cancel(self, f: Future) -> None:
        with self._cond:
            for p in self._pending:
                if f in p.futures:
                    self._pending.remove(p)
                    f._set_cancelled("cancelled by the user")
                    return
        if f.run is None:
            return
        try:
            self.cli.run_json(["cancel", f.task])
        except ScalableError:
            return  # finished meanwhile: the tracker settles it
        f._set_cancelled("cancelled by the user")

    def _pump_loop(self) -> None:
        last_status = 0.0
        while True:
            with self._cond:
                if self._closed:
                    return
                if not self._pending and not self._tracker.outstanding():
                    self._cond.wait()
                    continue
                open_futures = self._tracker.outstanding()
                self._cond.wait(min(SCAN_EVERY_MAX, SCAN_EVERY + SCAN_PER_FUTURE * open_futures))
                holding = self._holds > 0
            if not holding:
                time.sleep(COALESCE)  # calls made in a loop go in one run
                self.flush()
            now = time.monotonic()
            full = now - last_status >= STATUS_EVERY
            if full:
                last_status = now
            try:
                self._tracker.poll(full)
            except ScalableError:
                pass  # a failed poll is retried on the next round
