"""Scalable's Python client: sessions, futures for Python functions and
commands run on the broker's agents, and the resource advisors.

A thin client over the `scalable` CLI's JSON interface (`--json`); see
python/README.md. Names are imported on first use, so a task's interpreter
(`python -m scalable._worker`) pays only for the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ScalableSession": "session",
    "Plan": "session",
    "Client": "client",
    "Future": "futures",
    "CommandResult": "futures",
    "as_completed": "futures",
    "ResourceAdvisor": "advisors",
    "LearnedAdvisor": "advisors",
    "Recommendation": "advisors",
    "History": "history",
    "ScalableError": "errors",
    "InvalidInput": "errors",
    "BrokerUnreachable": "errors",
    "TaskFailed": "errors",
    "TaskCancelled": "errors",
    "RemoteTraceback": "errors",
    "ScalableWarning": "errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .advisors import LearnedAdvisor, Recommendation, ResourceAdvisor
    from .client import Client
    from .errors import BrokerUnreachable, InvalidInput, RemoteTraceback, ScalableError, ScalableWarning, TaskCancelled, TaskFailed
    from .futures import CommandResult, Future, as_completed
    from .history import History
    from .session import Plan, ScalableSession


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scalable' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
