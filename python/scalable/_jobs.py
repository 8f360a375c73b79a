"""Workflow jobs for Python calls and commands, and submitting a batch of them
as one run.

Owns: the job each call becomes (the worker's argv, the outcome file as a
declared output, the environment that makes the client's modules importable),
how a future argument becomes a dependency (`after` inside one run, a `Ref`
to its outcome file either way), and the `scalable submit` of one batch.
Must not poll or settle futures beyond failing a batch that was refused.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import _payload
from ._cli import Cli
from .futures import Future


@dataclass
class Options:
    """Where and how a task runs (SPEC §4: tag, resources, retries, walltime)."""

    tag: Optional[str] = None
    cpus: Optional[int] = None
    memory: Optional[str] = None
    gpus: Optional[int] = None
    retries: Optional[int] = None
    walltime: Optional[str] = None

    def apply(self, job: Dict[str, Any]) -> Dict[str, Any]:
        if self.tag:
            job["tag"] = self.tag
        res = {k: v for k, v in (("cpus", self.cpus), ("memory", self.memory), ("gpus", self.gpus)) if v is not None}
        if res:
            job["resources"] = res
        if self.retries is not None:
            job["retries"] = int(self.retries)
        if self.walltime is not None:
            job["walltime"] = str(self.walltime)
        return job


@dataclass
class Pending:
    """A call written to disk, waiting to be part of a submitted run."""

    job: Dict[str, Any]
    futures: List[Future]
    deps: List[Future] = field(default_factory=list)


# SPEC §4: a job name is letters, digits, "_", "." and "-", at most 128 long;
# room is left for the "-N" a repeated name gets within one run.
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_MAX = 120


def job_label(what: Any) -> str:
    """The job name of a call: the function's name (a program's for a command),
    so the broker's advisors, `status` and the report group a function's calls
    across runs (`LearnedAdvisor.recommend(task="run_demeter_scenario")`)."""
    name = what if isinstance(what, str) else getattr(what, "__name__", None) or type(what).__name__
    return _NAME_CHARS.sub("_", name)[:_NAME_MAX] or "call"


def unique_names(batch: List["Pending"]) -> None:
    """Job names unique within one run: the first call of a function keeps its
    name, later ones in the same batch get "-2", "-3", ... (their futures too)."""
    taken: set = set()
    next_n: Dict[str, int] = {}
    for p in batch:
        base = name = p.job["name"]
        while name in taken:
            next_n[base] = next_n.get(base, 1) + 1
            name = f"{base}-{next_n[base]}"
        taken.add(name)
        p.job["name"] = name
        for f in p.futures:
            f.name = name


def task_env() -> Dict[str, str]:
    """The client's module path, so a task's interpreter imports what the
    caller could (functions pickled by reference, `scalable` itself)."""
    paths = [os.path.abspath(p) for p in sys.path if p]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys([here, os.getcwd(), *paths]))}


# A warm task's command: the agent runs its own binary (`@scalable-agent`) as
# a trampoline that hands the call to the agent's pre-imported interpreter,
# or runs the rest of the line cold when there is none (agent/src/warm.rs).
WARM_PREFIX = ["@scalable-agent", "warm-exec", "--"]


def worker_argv(inp: str, out: str, index: Optional[str] = None, warm: bool = True) -> List[str]:
    """The task's command: `python -m scalable._worker IN OUT [INDEX]`, behind
    the agent's trampoline when `warm` (the client's default)."""
    argv = [sys.executable, "-m", "scalable._worker", inp, out]
    argv = argv + [index] if index is not None else argv
    return WARM_PREFIX + argv if warm else argv


def swap_futures(value: Any, rundir: str, deps: List[Future]) -> Any:
    """Futures in the arguments (top level, lists, tuples, dicts, as Dask
    does) become `Ref`s to their outcome files and are noted as dependencies."""
    if isinstance(value, Future):
        deps.append(value)
        return _payload.Ref(os.path.join(rundir, value.out))
    if isinstance(value, (list, tuple)):
        swapped = [swap_futures(v, rundir, deps) for v in value]
        return swapped if isinstance(value, list) else tuple(swapped)
    if isinstance(value, dict):
        return {k: swap_futures(v, rundir, deps) for k, v in value.items()}
    return value


def submit_batch(cli: Cli, rundir: str, seq: int, batch: List[Pending]) -> int:
    """Submit the batch as one run; returns its id. A dependency inside the
    batch is an `after` (the broker runs the dependent only once it
    succeeded, and cancels it if it failed)."""
    unique_names(batch)
    in_batch = {id(f) for p in batch for f in p.futures}
    jobs = []
    for p in batch:
        job = dict(p.job)
        after = sorted({d.name for d in p.deps if id(d) in in_batch and not d.done()})
        if after:
            job["after"] = after
        jobs.append(job)
    wf = {"workflow": f"python-{seq}", "jobs": jobs}
    path = os.path.join(rundir, f"run-{seq}.yaml")
    # JSON is YAML: the workflow reader takes it as written.
    _payload.write_atomic(path, json.dumps(wf).encode())
    reply = cli.run_json(["submit", path])
    return int(reply["run"])
