"""Notice when the harness's own event loop stops turning, and catch what it was doing.

Send lateness says *that* the harness was late; when a single stall makes every call late at once, the question is
*why*. A heartbeat task beats every ``interval_s``; a watchdog thread looks at it, and once the beat is older than
``threshold_s`` it takes the event-loop thread's stack (``sys._current_frames``). When the loop turns again, the
heartbeat records the stall: how long, and that stack. A stall with no stack means the thread could not run either:
the GIL was held the whole time (C code, the garbage collector: see ``harness.gcpause``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

MAX_KEPT = 20


class StallWatch:
    def __init__(self, emit: Callable[[str, dict[str, Any]], None], *, threshold_s: float = 0.2,
                 interval_s: float = 0.02) -> None:
        self.emit = emit
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.stalls: list[dict[str, Any]] = []
        self.count = 0
        self.longest_s = 0.0
        self._beat = time.monotonic()
        self._stack: str | None = None
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._stack is None and time.monotonic() - self._beat > self.threshold_s:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self._stack = "".join(traceback.format_stack(frame, limit=25))

    async def run(self) -> None:
        """The heartbeat; start it as a task on the loop to watch, cancel it to stop watching."""
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="voicechaos stall watch", daemon=True)
        self._thread.start()
        try:
            while True:
                self._beat = time.monotonic()
                await asyncio.sleep(self.interval_s)
                late = time.monotonic() - self._beat - self.interval_s
                if late > self.threshold_s:
                    self._record(late)
        finally:
            self._stop.set()

    def _record(self, late: float) -> None:
        stack, self._stack = self._stack, None
        self.count += 1
        self.longest_s = max(self.longest_s, late)
        stall = {"stalled_ms": round(late * 1000, 1),
                 "stack": stack or "none caught: the GIL was held throughout (C code or the garbage collector)"}
        if len(self.stalls) < MAX_KEPT:
            self.stalls.append(stall)
        self.emit("harness_stall", stall)

    def summary(self) -> dict[str, Any]:
        return {"threshold_ms": round(self.threshold_s * 1000), "count": self.count,
                "longest_ms": round(self.longest_s * 1000, 1)}
