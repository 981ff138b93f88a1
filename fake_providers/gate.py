"""The gate every request to a fake provider passes through: it decides how the request is served.

Protocol code never draws a delay or sleeps on its own account. It asks the provider's :class:`ProviderGate`:

- :meth:`ProviderGate.admit` runs first for every HTTP request and websocket handshake (an aiohttp
  middleware); it counts the request and may refuse it. Today it never refuses; the fault issue (429 rate
  limits, 5xx, stalls through a control API) makes its decision here, in one place, with no change to the
  protocol code.
- :meth:`ProviderGate.plan` hands a handler the delays of one stream (a :class:`Plan` drawn from a `Latency`).

The gate also keeps the provider's :class:`ProviderCounters` for metrics. Nothing here logs or prints.

Contract for a later fault: :meth:`admit` is synchronous and cheap; a stall is expressed through the plan's
delays (which the adapters wait on with :class:`Pacer`, and which are cancelled with the request).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fake_providers.latency import Latency
from harness.clock import Clock


@dataclass
class ProviderCounters:
    """What a provider has served since it started (read by metrics; written only by the gate)."""

    requests: int = 0
    #: Requests and streams in progress: an HTTP stream until its last byte, a websocket until it closes.
    active: int = 0
    refused: int = 0
    by_route: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the gate turns away: the HTTP status, JSON body and headers the client receives."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


class Plan:
    """The delays of one stream, drawn lazily from the provider's seeded generator."""

    def __init__(self, latency: Latency, rng: random.Random) -> None:
        self._latency = latency
        self._rng = rng

    def first_byte(self) -> float:
        return self._latency.ttfb.sample(self._rng)

    def interval(self) -> float:
        return self._latency.chunk_interval.sample(self._rng)

    def schedule(self, start: float, count: int) -> list[float]:
        """Due times of ``count`` chunks of a stream starting at ``start``: first byte, then intervals."""
        due: list[float] = []
        at = start + self.first_byte() if count else start
        for _ in range(count):
            if due:
                at += self.interval()
            due.append(at)
        return due


class ProviderGate:
    def __init__(self, name: str, *, rng: random.Random, clock: Clock) -> None:
        self.name = name
        self.rng = rng
        self.clock = clock
        self.counters = ProviderCounters()

    def admit(self, route: str) -> Refusal | None:
        """Count a request to ``route`` and decide whether it is served (``None``) or refused."""
        self.counters.requests += 1
        self.counters.by_route[route] += 1
        return None

    def plan(self, latency: Latency) -> Plan:
        return Plan(latency, self.rng)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The aiohttp middleware that routes every request of an app through this gate."""

        @web.middleware
        async def gate_middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
            refusal = self.admit(route)
            if refusal is not None:
                self.counters.refused += 1
                return refusal.response()
            self.counters.active += 1
            try:
                return await handler(request)
            finally:
                self.counters.active -= 1

        return gate_middleware


class Pacer:
    """Waits for deadlines on the injected clock's timeline (the one place the fakes sleep)."""

    def __init__(self, clock: Clock, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock = clock
        self._sleep = sleep

    async def until(self, deadline: float) -> None:
        delay = deadline - self.clock.now()
        if delay > 0:
            await self._sleep(delay)


GATE_KEY: web.AppKey[ProviderGate] = web.AppKey("voicechaos_gate", ProviderGate)


def gate_of(app: web.Application) -> ProviderGate:
    """The gate (and so the counters) of a fake provider's app."""
    return app[GATE_KEY]
