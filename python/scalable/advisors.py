"""Resource advisors (SPEC §11) over `scalable advise --format json`.

Owns: the argument building for `advise` (task, target, model type,
features) and the `Recommendation` of seed 003's JSON shape. The history
itself lives in the broker's store; `from_history` only says which broker.
Must not compute advice in Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from ._cli import Cli

MODEL_TYPES = ("linear", "random_forest", "gradient_boosting")


@dataclass
class Recommendation:
    """Seed 003's fields: `workers`, `resources`, `confidence`, `evidence`."""

    task: str
    workers: Dict[str, int]
    resources: Dict[str, Dict[str, Any]]
    confidence: float
    model_type: Optional[str] = None
    method: Optional[str] = None
    evidence: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Recommendation":
        return cls(
            task=str(obj.get("task", "")),
            workers={k: int(v) for k, v in (obj.get("workers") or {}).items()},
            resources=dict(obj.get("resources") or {}),
            confidence=float(obj.get("confidence") or 0.0),
            model_type=obj.get("model_type"),
            method=obj.get("method"),
            evidence=dict(obj.get("evidence") or {}),
            raw=obj,
        )


def access_of(source: Any) -> Optional[str]:
    """Which broker a history source names: a client or session, an access
    file, a state dir holding `access.json`; None: the CLI's default."""
    access = getattr(source, "access", None) or getattr(getattr(source, "cli", None), "access", None)
    if access:
        return str(access)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path):
            return path
        for candidate in (os.path.join(path, "access.json"), os.path.join(os.path.dirname(path), "access.json")):
            if os.path.isfile(candidate):
                return candidate
    return None


class ResourceAdvisor:
    """The percentile advisor: `ResourceAdvisor.from_history(session).recommend(task=...)`."""

    model_type: Optional[str] = None

    def __init__(self, access: Optional[str] = None, timeout: float = 60.0) -> None:
        self.cli = Cli(access, timeout)

    @classmethod
    def from_history(cls, source: Any = None, **kwargs: Any) -> "ResourceAdvisor":
        return cls(access_of(source), **kwargs)

    def args(self, task: str, target: Optional[str] = None,
             features: Optional[Mapping[str, Union[str, int, float]]] = None) -> List[str]:
        """The `scalable advise` arguments for one question."""
        args = ["advise", "--task", task]
        if target:
            args += ["--target", target]
        if self.model_type:
            args += ["--model-type", self.model_type]
        for key, value in (features or {}).items():
            args += ["--features", f"{key}={value}"]
        return args + ["--format", "json"]

    def recommend(self, task: str, target: Optional[str] = None,
                  features: Optional[Mapping[str, Union[str, int, float]]] = None,
                  confidence: Optional[float] = None) -> Recommendation:
        # `advise` prints JSON under `--format json`; `--json` is the global
        # flag every command takes, and both ask for the same output.
        del confidence  # the CLI's percentile is fixed (P95, SPEC §11)
        return Recommendation.from_json(self.cli.run_json(self.args(task, target, features)))


class LearnedAdvisor(ResourceAdvisor):
    """The learned advisor: `LearnedAdvisor.from_history(session, model_type="random_forest")`."""

    def __init__(self, access: Optional[str] = None, model_type: str = "gradient_boosting",
                 timeout: float = 120.0) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r}: one of {', '.join(MODEL_TYPES)}")
        super().__init__(access, timeout)
        self.model_type = model_type

    @classmethod
    def from_history(cls, source: Any = None, model_type: str = "gradient_boosting",  # type: ignore[override]
                     **kwargs: Any) -> "LearnedAdvisor":
        return cls(access_of(source), model_type=model_type, **kwargs)
