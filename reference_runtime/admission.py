"""Admission of calls: capacity and draining, sans-I/O.

A process takes at most ``capacity`` calls at once. The webhook asks :meth:`Admission.has_room` (answering
``<Reject reason="busy"/>`` when full); the media websocket takes a slot with :meth:`admit` (closing with 1013
"at capacity" or "draining" when refused) and gives it back with :meth:`release` once the call, *including the
hand-over of its recording*, is over. Draining (SIGTERM, or the memory safeguard at 85 % of its budget) refuses
new calls the same way and lets those in progress finish; ``drain_reason`` says which.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

#: RFC 6455 section 7.4.1 / IANA registry: 1013 "Try Again Later".
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    """``"at capacity"`` or ``"draining"`` (the websocket close reason)"""


class Admission:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active: set[str] = set()
        self.draining = False
        self.drain_reason: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def accepting(self) -> bool:
        return not self.draining and len(self.active) < self.capacity

    def has_room(self) -> bool:
        return self.accepting

    def admit(self, call_id: str) -> Refused | None:
        if self.draining:
            return Refused("draining")
        if len(self.active) >= self.capacity:
            return Refused("at capacity")
        self.active.add(call_id)
        self._idle.clear()
        return None

    def release(self, call_id: str) -> None:
        self.active.discard(call_id)
        if not self.active:
            self._idle.set()

    def drain(self, reason: str = "shutdown") -> None:
        """Refuse new calls from now on (for good: a drained process exits). The first reason given is kept."""
        if not self.draining:
            self.drain_reason = reason
        self.draining = True

    async def wait_idle(self) -> None:
        await self._idle.wait()
