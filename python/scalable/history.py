"""Read-only access to what the broker recorded: runs, telemetry rows and
reports (SPEC §10), over `scalable status`, `export` and `report`.

Owns: turning those commands' output into Python values (lists of dicts,
rows grouped by table, the report as JSON, text or HTML). Must not write to
the broker nor compute summaries itself: the broker's report is the one
source of its numbers.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Union

from ._cli import Cli

REPORT_FORMATS = ("json", "text", "html")


class History:
    """What one broker recorded; `History.of(session)` or `client.history`."""

    def __init__(self, access: Optional[str] = None, timeout: float = 60.0) -> None:
        self.cli = Cli(access, timeout)

    @classmethod
    def of(cls, source: Any = None, **kwargs: Any) -> "History":
        from .advisors import access_of

        return cls(access_of(source), **kwargs)

    def runs(self) -> List[Dict[str, Any]]:
        """Every run the broker holds, newest last: id, workflow, state,
        counts (`scalable status --json`)."""
        reply = self.cli.run_json(["status"])
        return list(reply.get("runs", reply) if isinstance(reply, dict) else reply)

    def telemetry(self, run: Union[int, str] = "last") -> Dict[str, List[Dict[str, Any]]]:
        """A run's telemetry rows grouped by the `table` each row names in
        `scalable export` (`run`, `job`, `task`, `attempt`, `usage`, `agent`,
        `pilot`; docs/telemetry.md): one dict per row."""
        text = self.cli.run_text(["export", str(run)])
        tables: Dict[str, List[Dict[str, Any]]] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            tables.setdefault(str(row.pop("table", "rows")), []).append(row)
        return tables

    def report(self, run: Union[int, str] = "last", format: str = "json",
               output: Optional[str] = None) -> Union[Dict[str, Any], str]:
        """The run's report: a dict (`json`, docs/report-json.md), or the text
        or the one-page HTML as a string; with `output`, also written there."""
        if format not in REPORT_FORMATS:
            raise ValueError(f"report format {format!r}: one of {', '.join(REPORT_FORMATS)}")
        args = ["report", str(run), "--format", format]
        if output:
            self.cli.run_text(args + ["--output", output])
            with open(output, encoding="utf-8") as f:
                text = f.read()
        else:
            text = self.cli.run_text(args)
        return json.loads(text) if format == "json" else text
