"""The exceptions of the Python client.

Owns: one exception class per way a call can fail, each carrying the CLI's
one-line message, its hint and its exit code (SPEC §7: 1 failed, 2 bad input,
3 broker unreachable or refused). Must not run anything.
"""

from __future__ import annotations

from typing import Optional


class ScalableError(Exception):
    """A `scalable` command failed: its one-line message and hint."""

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: int = 1) -> None:
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        text = message if not hint else f"{message} (hint: {hint})"
        super().__init__(text)


class InvalidInput(ScalableError, ValueError):
    """Exit code 2: the manifest, workflow or arguments were refused."""


class BrokerUnreachable(ScalableError, ConnectionError):
    """Exit code 3, or no answer within the timeout: the broker cannot be reached."""


class TaskFailed(ScalableError):
    """A task failed without a Python exception to show (killed, out of memory,
    walltime, an interpreter that did not start): the broker's reason and the
    task's stderr tail."""

    def __init__(self, task: str, reason: str, stderr_tail: str = "") -> None:
        self.task = task
        self.reason = reason
        self.stderr_tail = stderr_tail
        hint = f"scalable analyze {task.split('/')[0]} --json"
        super().__init__(f"task {task} failed: {reason}", hint, 1)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n{self.stderr_tail}" if self.stderr_tail else text


class TaskCancelled(ScalableError):
    """The task was cancelled: by the user, or because a dependency failed."""

    def __init__(self, task: str, cause: str = "cancelled") -> None:
        self.task = task
        super().__init__(f"task {task} was cancelled: {cause}", None, 1)


class RemoteTraceback(Exception):
    """The traceback text of an exception raised on an agent; set as the
    `__cause__` of the re-raised exception so both tracebacks print."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class ScalableWarning(UserWarning):
    """A CLI warning, e.g. a submitted job that no agent can run yet."""
