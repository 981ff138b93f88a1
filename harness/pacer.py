"""The 20 ms grid every simulated caller sends on, shared by all calls in a process.

Twilio sends one 20 ms media frame per call every 20 ms. Sleeping per call would cost one timer per frame per call;
instead one task walks a wheel of 1 ms slots and ticks the calls in the slot that is due. Calls are spread over the
slots (each has its own phase, as real calls do), so the work of one tick is 1/20 of the calls and a frame's send
lateness measures the harness, not the length of a queue of other calls' sends.

Each call's grid is absolute (``phase + k * 20 ms``): lateness never accumulates, and it is measured against the
scheduled time of every frame and recorded in a :class:`~harness.lateness.LatenessHistogram`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from harness.clock import Clock
from harness.lateness import LatenessHistogram

FRAME_S = 0.020
SLOTS = 20
SLOT_S = FRAME_S / SLOTS


class Paced(Protocol):
    def tick(self, scheduled: float, now: float) -> None:
        """Send the frame due at ``scheduled``; ``now`` is when the pacer got to it."""
        ...


class Pacer:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._slots: list[list[Paced]] = [[] for _ in range(SLOTS)]
        self._first: dict[Paced, float] = {}  # a call's first frame: never tick it for an earlier grid point
        self.active = 0
        self._epoch = clock.now()
        self._wake = asyncio.Event()
        self.lateness = LatenessHistogram()
        self.ticks = 0

    def add(self, call: Paced) -> float:
        """Start pacing ``call`` in the least busy slot; returns the scheduled time of its first frame."""
        slot = min(range(SLOTS), key=lambda i: len(self._slots[i]))
        self._slots[slot].append(call)
        self.active += 1
        self._wake.set()
        now = self._clock.now()
        # first grid point of this slot strictly after now
        period_index = int((now - self._epoch - slot * SLOT_S) // FRAME_S) + 1
        first = self._epoch + (period_index * SLOTS + slot) * SLOT_S  # the same arithmetic as run()
        self._first[call] = first
        return first

    def remove(self, call: Paced) -> None:
        self._first.pop(call, None)
        for slot in self._slots:
            if call in slot:
                slot.remove(call)
                self.active -= 1
                return

    async def run(self) -> None:
        """Tick due slots for ever (cancel to stop). Sleeps while no call is paced."""
        clock = self._clock
        step = self._resume()
        while True:
            if not self.active:
                self._wake.clear()
                await self._wake.wait()
                step = self._resume()  # back on the grid: skip the slots that passed while idle
            scheduled = self._epoch + step * SLOT_S  # by multiplication: no float drift over a long soak
            slot_index = step % SLOTS
            now = clock.now()
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
                now = clock.now()
            calls = self._slots[slot_index]
            if calls:
                self.ticks += 1
                first = self._first
                for call in tuple(calls):
                    if scheduled + 1e-9 < first.get(call, scheduled):
                        continue
                    first.pop(call, None)  # on its grid from now on
                    call.tick(scheduled, now)
                    sent = clock.now()
                    self.lateness.record(sent - scheduled)
                    now = sent
            step += 1

    def _resume(self) -> int:
        """The next slot to walk after being idle (or at the start): the one after now, or the slot of a call's
        first frame that is already due, so that a late start sends that frame late (and measured) rather than
        skipping it."""
        step = int((self._clock.now() - self._epoch) // SLOT_S) + 1
        if self._first:
            earliest = min(self._first.values())
            step = min(step, round((earliest - self._epoch) / SLOT_S))
        return step
