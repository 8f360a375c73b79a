"""Futures: the caller's handle on one task.

Owns: a future's state (pending, finished with a value, an exception, or
cancelled), settled exactly once whatever reports it twice; waiting with a
timeout; `as_completed`. Must not poll the broker: the client's tracker
settles futures.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional

from ._cli import Cli
from .errors import TaskCancelled

if TYPE_CHECKING:
    from .client import Client


@dataclass
class CommandResult:
    """A command task that succeeded; `stdout()` fetches what it printed."""

    task: str
    cli: Cli

    def stdout(self) -> str:
        return self.cli.run_text(["logs", self.task])

_PENDING, _FINISHED, _ERROR, _CANCELLED = "pending", "finished", "error", "cancelled"


class Future:
    """The outcome of one task; `result()` waits for it."""

    def __init__(self, client: "Client", name: str, out: str, index: Optional[int] = None) -> None:
        self._client = client
        self.name = name  # the job's name in its run
        self.out = out  # the outcome file, relative to the client's run dir
        self.index = index
        self.run: Optional[int] = None
        self._state = _PENDING
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._cond = threading.Condition()
        self._callbacks: List[Callable[["Future"], None]] = []

    @property
    def task(self) -> str:
        """The task's name as the CLI spells it (`RUN/JOB/INDEX`)."""
        return f"{self.run if self.run is not None else '?'}/{self.name}/{self.index or 0}"

    @property
    def status(self) -> str:
        return self._state

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def cancel(self) -> bool:
        """Ask the broker to cancel the task; True once the future is cancelled."""
        if self.done():
            return self.cancelled()
        self._client._cancel(self)
        return self.cancelled()

    def result(self, timeout: Optional[float] = None) -> Any:
        """The task's value; raises its exception (with the remote traceback)."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        self._wait(timeout)
        return self._error

    def add_done_callback(self, fn: Callable[["Future"], None]) -> None:
        with self._cond:
            if self._state == _PENDING:
                self._callbacks.append(fn)
                return
        fn(self)

    def _wait(self, timeout: Optional[float]) -> None:
        if self._state == _PENDING:
            self._client._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._state == _PENDING:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {self.task} not done within {timeout:g} s")
                self._cond.wait(left)

    def _settle(self, state: str, value: Any = None, error: Optional[BaseException] = None) -> bool:
        """Settle once: a second report (a retried attempt, a late poll) is dropped."""
        with self._cond:
            if self._state != _PENDING:
                return False
            self._state, self._value, self._error = state, value, error
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for cb in callbacks:
            cb(self)
        return True

    def _set_result(self, value: Any) -> bool:
        return self._settle(_FINISHED, value=value)

    def _set_error(self, error: BaseException) -> bool:
        return self._settle(_ERROR, error=error)

    def _set_cancelled(self, cause: str) -> bool:
        return self._settle(_CANCELLED, error=TaskCancelled(self.task, cause))

    def __repr__(self) -> str:
        return f"<Future {self.task} {self._state}>"


def as_completed(futures: Iterable[Future], timeout: Optional[float] = None) -> Iterator[Future]:
    """Yield each future as it finishes (failed and cancelled ones too)."""
    items = list(futures)
    done: "queue.Queue[Future]" = queue.Queue()
    for f in items:
        f.add_done_callback(done.put)
    for client in {id(f._client): f._client for f in items}.values():
        client._wake()
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(len(items)):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            yield done.get(timeout=left)
        except queue.Empty:
            raise TimeoutError(f"not every future finished within {timeout:g} s") from None
