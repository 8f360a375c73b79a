"""Running the `scalable` CLI with `--json` and turning its answers into Python.

Owns: where the binaries are (`$SCALABLE_BIN_DIR`, then `PATH`), the one call
shape (`run_json`), the timeout on every call, and the mapping of the CLI's
`{"error", "hint"}` objects and exit codes to exceptions. Must not know about
futures, sessions or payloads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from typing import Any, Optional, Sequence

from .errors import BrokerUnreachable, InvalidInput, ScalableError, ScalableWarning

# The CLI's own connection timeout is 120 s; a Python caller gets a shorter
# bound by default so an unreachable broker never blocks a notebook for long.
DEFAULT_TIMEOUT = 30.0


def binary(name: str) -> str:
    """The path of `scalable`, `scalable-broker` or `scalable-agent`."""
    bin_dir = os.environ.get("SCALABLE_BIN_DIR")
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise ScalableError(
        f"{name}: not found on PATH",
        "build with `cargo build --bins` and put target/debug on PATH, or set SCALABLE_BIN_DIR",
        2,
    )


class Cli:
    """The CLI bound to one broker access file."""

    def __init__(self, access: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.access = access
        self.timeout = timeout
        self.exe = binary("scalable")

    def run_json(
        self,
        args: Sequence[str],
        *,
        timeout: Optional[float] = None,
        broker: bool = True,
        cwd: Optional[str] = None,
        data_on_1: bool = False,
    ) -> Any:
        """Run `scalable ARGS --json` and return its parsed stdout.
        `data_on_1`: exit 1 with data is an answer (`analyze` of a failed run)."""
        argv = [self.exe, *args, "--json"]
        if broker and self.access:
            argv += ["--access", self.access]
        return run_json_argv(argv, timeout=timeout or self.timeout, cwd=cwd, data_on_1=data_on_1)


    def run_text(self, args: Sequence[str], *, timeout: Optional[float] = None) -> str:
        """Run `scalable ARGS` and return its stdout as text (`logs`)."""
        argv = [self.exe, *args] + (["--access", self.access] if self.access else [])
        try:
            proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise unreachable(argv, timeout or self.timeout) from exc
        if proc.returncode != 0:
            raise error_from(proc.returncode, proc.stderr.decode("utf-8", "replace"))
        return proc.stdout.decode("utf-8", "replace")


def unreachable(argv: Sequence[str], timeout: float) -> BrokerUnreachable:
    return BrokerUnreachable(
        f"scalable {argv[1] if len(argv) > 1 else ''}: no answer within {timeout:g} s",
        "is the broker running? `scalable agents` checks the connection",
        3,
    )


def run_json_argv(argv: Sequence[str], *, timeout: float, cwd: Optional[str] = None,
                  data_on_1: bool = False) -> Any:
    """Run a command printing JSON; raise the exception its exit code names."""
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise unreachable(argv, timeout) from exc
    answered = data_on_1 and proc.returncode == 1 and proc.stdout.strip()
    if proc.returncode != 0 and not answered:
        raise error_from(proc.returncode, proc.stderr.decode("utf-8", "replace"))
    warn_from(proc.stderr.decode("utf-8", "replace"))
    out = proc.stdout.decode("utf-8", "replace").strip()
    return json.loads(out) if out else None


def warn_from(stderr: str) -> None:
    """The CLI's `{"warning","hint"}` lines (e.g. `submit`'s "job f1 cannot
    start: no connected agent has tag ...") as Python warnings."""
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "warning" in obj:
            hint = f" (hint: {obj['hint']})" if obj.get("hint") else ""
            warnings.warn(f"{obj['warning']}{hint}", ScalableWarning, stacklevel=4)


def error_from(code: int, stderr: str) -> ScalableError:
    """The exception for a failed CLI call: the `{"error","hint"}` line it printed."""
    message, hint = stderr.strip() or f"exit code {code}", None
    for line in reversed(stderr.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "error" in obj:
            message, hint = str(obj["error"]), obj.get("hint")
            break
    kind = {2: InvalidInput, 3: BrokerUnreachable}.get(code, ScalableError)
    return kind(message, hint, code)
