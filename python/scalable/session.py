"""Sessions: a manifest and target, the broker that serves them, and clients.

Owns: `ScalableSession` (from a manifest, or attached to a running broker by
its access file), `plan` through `scalable plan`, starting and stopping a
local broker with the target's agents the way `scripts/demo.sh` does, and the
wait for that broker to listen and its agents to connect (bounded). Must not
submit work (the client does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ._cli import Cli, binary
from .client import Client
from .errors import BrokerUnreachable, ScalableError

START_TIMEOUT = 30.0


@dataclass
class Plan:
    """`scalable plan --dry-run`: workers per tag and what they cost."""

    rows: List[Dict[str, Any]]
    cost: List[Dict[str, Any]] = field(default_factory=list)
    # An objective plan (`plan(objective=..., policy=...)`): its rows are the
    # groups of `scalable plan --objective --format json` (docs/scaling.md),
    # each with its alternatives; these are the plan's totals.
    objective: Optional[str] = None
    policy: Optional[str] = None
    predicted_makespan_seconds: Optional[float] = None
    predicted_cost: Optional[float] = None
    raw: Dict[str, Any] = field(default_factory=dict)

    @property
    def scale_plan(self) -> Dict[str, int]:
        return {row["tag"]: int(row["workers"]) for row in self.rows}

    @property
    def workers(self) -> int:
        return sum(self.scale_plan.values())


class ScalableSession:
    """`with ScalableSession.from_yaml("scalable.yaml", target="local") as s:
    client = s.start()`; or `ScalableSession.attach(".scalable/access.json")`."""

    def __init__(self, manifest: Optional[str] = None, target: Optional[str] = None,
                 overlays: Sequence[str] = (), access: Optional[str] = None,
                 state_dir: Optional[str] = None, timeout: float = 30.0,
                 broker_args: Sequence[str] = ()) -> None:
        self.manifest = os.path.abspath(manifest) if manifest else None
        self.target = target
        self.overlays = list(overlays)
        self.access = os.path.abspath(access) if access else None
        self.state_dir = state_dir
        self.timeout = timeout
        self.broker_args = list(broker_args)  # extra `scalable-broker` flags
        self.broker: Optional[subprocess.Popen] = None
        self.clients: List[Client] = []
        self._made_state_dir = False  # a temporary state dir goes with the session

    @classmethod
    def from_yaml(cls, path: str, target: str = "local", overlays: Sequence[str] = (),
                  access: Optional[str] = None, state_dir: Optional[str] = None,
                  broker_args: Sequence[str] = ()) -> "ScalableSession":
        """A session for a manifest's target; with `access`, attach to that
        broker instead of starting one (`broker_args`: extra broker flags,
        e.g. `["--heartbeat-timeout", "5"]`)."""
        if not os.path.isfile(path):
            raise ScalableError(f"{path}: no such manifest", "give the path of a scalable.yaml", 2)
        return cls(path, target, overlays, access, state_dir, broker_args=broker_args)

    @classmethod
    def attach(cls, access: str) -> "ScalableSession":
        """A session on a running broker (its `access.json`)."""
        return cls(access=access)

    def plan(self, objective: Optional[str] = None, policy: Optional[str] = None, dry_run: bool = True,
             workflow: Optional[str] = None) -> Plan:
        """Workers per tag for the target. Without `objective`/`policy`: the
        manifest's counts (`scalable plan --dry-run`); with them: the
        objective planner (`"minimize cost"`, `"minimize time"`, `"balance"`;
        `safe`, `aggressive`, `manual`) from the broker's history when this
        session has one, predicted makespan and cost, the alternatives it
        weighed. A plan is advice: the broker's adaptive scaler sizes targets
        that declare `adaptive:`, so `dry_run=False` is refused."""
        if not dry_run:
            raise ScalableError("plan(dry_run=False): a plan is not applied from Python",
                                "give the target adaptive: bounds (the broker's scaler sizes it) or use "
                                "`scalable scale`", 2)
        if not self.manifest:
            raise ScalableError("plan: this session has no manifest", "use ScalableSession.from_yaml", 2)
        if objective is None and policy is None:
            args = ["plan", self.manifest, "--dry-run"] + self._target_args()
            reply = Cli(None, self.timeout).run_json(args, broker=False)
            return Plan(reply.get("rows", []), reply.get("cost", []))
        args = ["plan", self.manifest] + self._target_args() + ["--format", "json"]
        if objective is not None:
            args += ["--objective", objective]
        if policy is not None:
            args += ["--policy", policy]
        if workflow is not None:
            args += ["--workflow", os.path.abspath(workflow)]
        # With a broker, the planner reads its history (measured run times).
        reply = Cli(self.access, self.timeout).run_json(args, broker=self.access is not None)
        return Plan(list(reply.get("groups", [])), [], reply.get("objective"), reply.get("policy"),
                    reply.get("predicted_makespan_seconds"), reply.get("predicted_cost"), reply)

    def start(self, plan: Optional[Plan] = None) -> Client:
        """A client: on the broker of `access`, or on a broker started here
        for the manifest's target (its local agents connected first)."""
        if self.access is None:
            self.access = self._start_broker(plan)
        client = Client(self.access, timeout=self.timeout)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.clients = []
        if self.broker is not None and self.broker.poll() is None:
            self.broker.send_signal(signal.SIGTERM)
            try:
                self.broker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
        self.broker = None
        if self._made_state_dir and self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._made_state_dir = False

    def __enter__(self) -> "ScalableSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _target_args(self) -> List[str]:
        args = ["--target", self.target] if self.target else []
        for o in self.overlays:
            args += ["--overlay", o]
        return args

    def _start_broker(self, plan: Optional[Plan]) -> str:
        if not self.manifest:
            raise ScalableError("start: this session has no manifest and no access file",
                                "use ScalableSession.from_yaml or ScalableSession.attach", 2)
        if not self.state_dir:
            self._made_state_dir = True
        state = self.state_dir or tempfile.mkdtemp(prefix="scalable-py-")
        os.makedirs(state, exist_ok=True)
        self.state_dir = state
        argv = [binary("scalable-broker"), "--state-dir", state, "--listen", "127.0.0.1:0",
                "--manifest", self.manifest] + self._target_args() + self.broker_args
        log = open(os.path.join(state, "broker.log"), "ab")
        self.broker = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       cwd=os.path.dirname(self.manifest))
        log.close()
        access = os.path.join(state, "access.json")
        self._wait(lambda: os.path.exists(access), "the broker to write its access file")
        expected = self._local_workers(plan)
        if expected:
            cli = Cli(access, self.timeout)
            self._wait(lambda: len(cli.run_json(["agents"]) or []) >= expected,
                       f"{expected} local agents to connect")
        return access

    def _local_workers(self, plan: Optional[Plan]) -> int:
        """How many agents a broker started here brings (local targets only)."""
        try:
            plan = plan or self.plan()
        except ScalableError:
            return 0
        local = any("local target" in str(c.get("cost", {}).get("source", "")) for c in plan.cost)
        return plan.workers if local else 0

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.broker is not None and self.broker.poll() is not None:
                raise ScalableError(f"the broker exited ({self.broker.returncode}) waiting for {what}: "
                                    f"{self._log_tail()}", f"see {self.state_dir}/broker.log", 1)
            try:
                if ready():
                    return
            except BrokerUnreachable:
                pass
            time.sleep(0.05)
        self.close()
        raise BrokerUnreachable(f"timed out after {START_TIMEOUT:g} s waiting for {what}",
                                f"see {self.state_dir}/broker.log", 3)

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(str(self.state_dir), "broker.log"), encoding="utf-8", errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
            return lines[-1] if lines else "(no output)"
        except OSError:
            return "(no log)"
