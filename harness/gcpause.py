"""Keep the garbage collector from stalling the callers, and say how long it paused them.

A full (generation 2) collection walks every tracked object of the process. In a long-lived process (a soak, an
incident's second run after the first one's report, a test session) that heap is large, and one collection can
hold the event loop for hundreds of milliseconds: every call's frames go out late at once. So, for the load:
collect once, then ``gc.freeze()`` everything that exists (the permanent generation is never walked), and time each
collection that still happens, so the summary can tell a harness stalled by its own collector from a slow agent.
"""

from __future__ import annotations

import gc
import time
from types import TracebackType
from typing import Any


class GcWatch:
    def __init__(self) -> None:
        self._started: float | None = None
        self.collections = [0, 0, 0]
        self.max_s = [0.0, 0.0, 0.0]
        self.total_s = 0.0
        self.frozen = 0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        took = time.perf_counter() - self._started
        self._started = None
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.max_s[generation] = max(self.max_s[generation], took)
        self.total_s += took

    def __enter__(self) -> GcWatch:
        gc.collect()  # what is garbage now is freed, not frozen
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        gc.unfreeze()

    def summary(self) -> dict[str, Any]:
        return {"objects_frozen": self.frozen, "collections": list(self.collections),
                "max_pause_ms": [round(s * 1000, 2) for s in self.max_s], "total_ms": round(self.total_s * 1000, 1)}
