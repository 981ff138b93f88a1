"""The run's event log: one JSON object per line, appended and flushed as it happens.

Every line is written with a single ``write`` on a line-buffered file, so a Ctrl-C or a crash of the harness keeps
everything recorded before it (the OS holds what was flushed). Events are per call and per turn, never per frame.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", buffering=1, encoding="utf-8")
        self.count = 0

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        record = {"event": event, "time": round(time.time(), 6), **fields}
        self._file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read an event log back; a torn last line (the process died mid-write) is skipped, not fatal."""
    events = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
