"""Place one call outside a run: the composition a test (or a notebook) needs, with the events kept in a list."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from random import Random
from typing import Any

import aiohttp

from harness.caller import Call, CallEnvironment, Dial
from harness.clock import MonotonicClock
from harness.pacer import Pacer
from harness.records import CallRecord
from harness.scenario import Limits, Step
from harness.voice import Voice


@dataclass
class OneCall:
    record: CallRecord
    pacer: Pacer
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


async def place_call(dial: Dial, script: list[Step], limits: Limits | None = None, *, seed: int = 7) -> OneCall:
    events: list[tuple[str, dict[str, Any]]] = []
    clock = MonotonicClock()
    pacer = Pacer(clock)
    async with aiohttp.ClientSession() as http:
        env = CallEnvironment(clock=clock, pacer=pacer, voice=Voice(), http=http, rng=Random(seed),
                              emit=lambda name, fields: events.append((name, fields)))
        pacer_task = asyncio.create_task(pacer.run())
        try:
            record = await Call(env, 0, script, limits or Limits(), dial).run()
        finally:
            pacer_task.cancel()
    return OneCall(record, pacer, events)
