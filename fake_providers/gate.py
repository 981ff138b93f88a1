"""The gate every request to a fake provider passes through: it decides how the request is served.

Protocol code never draws a delay, a fault or a refusal on its own account. It asks the provider's
:class:`ProviderGate`:

- :meth:`ProviderGate.admit` runs first for every HTTP request and websocket handshake (an aiohttp
  middleware, :meth:`ProviderGate.middleware`); it counts the request and may refuse it: a limiter
  (:mod:`fake_providers.limits`) over its limit, or an ``admission`` fault (``rate_limit``, ``error``) drawn for
  it. The refusal is the provider's own error (:mod:`fake_providers.refusals`), sent before any handler runs,
  so a websocket is refused at its handshake as the real providers do. The ``stream`` faults drawn for it
  (``slow_first_byte``, ``stall``, ``truncate``, ``garbage``) go into the request's
  :class:`~fake_providers.disruption.Disruption`, which the sending adapters (``fake_providers.outbox``) obey
  chunk by chunk; handlers do not see faults at all.
- :meth:`ProviderGate.plan` hands a handler the delays of one stream (a :class:`Plan` drawn from a `Latency`).

Faults and limits change at run time through the control API (``fake_providers.control``, contract in
``fake_providers/FAULTS.md``), whose ``/_chaos/`` routes the gate lets through untouched and uncounted.

The gate also keeps the provider's :class:`ProviderCounters` for metrics. Nothing here logs or prints.

Contract: :meth:`admit` is synchronous and cheap (it never waits); every wait a fault asks for is done by an
adapter on the request's task, so it ends with the request.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fake_providers.disruption import DISRUPTION_KEY, Disruption
from fake_providers.faults import FAULT_KINDS, Fault, FaultError, Hit
from fake_providers.latency import Latency
from fake_providers.limits import Limiter, Limits
from fake_providers.outbox import send_whole
from fake_providers.refusals import PlainErrors, ProviderErrors, Refusal
from fake_providers.routes import Describer, RequestInfo, RouteTable, canonical_path
from harness.clock import Clock

#: the control API's routes: never faulted, limited or counted
CONTROL_PREFIX = "/_chaos"
_FAULT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass
class ProviderCounters:
    """What a provider has served since it started (read by metrics; written only by the gate)."""

    requests: int = 0
    #: Requests and streams in progress: an HTTP stream until its last byte, a websocket until it closes.
    active: int = 0
    peak_active: int = 0
    refused: int = 0
    #: requests per canonical path (``/v1/speak``)
    by_route: Counter[str] = field(default_factory=Counter)
    #: requests per route name (``speak.rest``), the names faults filter on
    by_name: Counter[str] = field(default_factory=Counter)
    active_by_name: Counter[str] = field(default_factory=Counter)
    refused_by_kind: Counter[str] = field(default_factory=Counter)
    refused_by_status: Counter[int] = field(default_factory=Counter)
    #: requests each fault (by id) was drawn for and applied to
    faults_applied: Counter[str] = field(default_factory=Counter)


@dataclass
class Admission:
    """One request's passage through the gate: what it is, the faults applied to it, its disruption."""

    request: RequestInfo
    disruption: Disruption
    applied: list[str] = field(default_factory=list)
    refusal: Refusal | None = None


ADMISSION_KEY = web.RequestKey("voicechaos_admission", Admission)


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


class Pacer:
    """Waits for deadlines on the injected clock's timeline (the one place the fakes sleep)."""

    def __init__(self, clock: Clock, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock = clock
        self._sleep = sleep

    async def until(self, deadline: float) -> None:
        delay = deadline - self.clock.now()
        if delay > 0:
            await self._sleep(delay)


class DuplicateFault(FaultError):
    """A fault id already in use (the control API answers 409)."""


async def _by_path(request: web.Request) -> RequestInfo:
    path = canonical_path(request)
    return RequestInfo(path, path.strip("/") or "/", request.query.get("model"))


class ProviderGate:
    def __init__(
        self,
        name: str,
        *,
        rng: random.Random,
        clock: Clock,
        errors: ProviderErrors | None = None,
        routes: RouteTable | None = None,
        describe: Describer | None = None,
        kinds: Mapping[str, type[Fault]] = FAULT_KINDS,
        faults: Iterable[Fault] = (),
        limits: Limits | None = None,
    ) -> None:
        """``errors``: how the provider refuses (default: a generic JSON API); ``routes``: its route names, to
        check filters against (None: any filter is accepted); ``describe``: names a request's route (default:
        its canonical path); ``kinds``: the fault registry the control API accepts."""
        self.name = name
        self.rng = rng
        self.clock = clock
        self.pacer = Pacer(clock)
        self.errors: ProviderErrors = errors or PlainErrors()
        self.routes = routes
        self.kinds = kinds
        self.counters = ProviderCounters()
        self._describe = describe or _by_path
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._limiter: Limiter | None = None
        for fault in faults:
            self.add_fault(fault)
        self.set_limits(limits)

    # -- faults and limits (the control API's verbs) ---------------------------------------------------------

    @property
    def faults(self) -> dict[str, Fault]:
        """The faults in force, by id, in the order they were added (the order they are drawn in)."""
        return dict(self._faults)

    def add_fault(self, fault: Fault, fault_id: str | None = None) -> str:
        """Put ``fault`` in force; returns its id (``fault_id`` if given). Raises FaultError if its route
        filter names no route of this provider, DuplicateFault if the id is taken."""
        problem = self.routes.check(fault.route) if self.routes is not None else None
        if problem is not None:
            raise FaultError(f"route: {problem}")
        if fault_id is None:
            fault_id = f"{fault.kind}-{next(self._ids)}"
            while fault_id in self._faults:
                fault_id = f"{fault.kind}-{next(self._ids)}"
        elif not _FAULT_ID.match(fault_id):
            raise FaultError("id: 1 to 64 letters, digits or _.:-")
        elif fault_id in self._faults:
            raise DuplicateFault(f"id: a fault {fault_id!r} is already in force")
        self._faults[fault_id] = fault
        return fault_id

    def remove_fault(self, fault_id: str) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear_faults(self) -> int:
        count = len(self._faults)
        self._faults.clear()
        return count

    @property
    def limits(self) -> Limits | None:
        return self._limiter.limits if self._limiter is not None else None

    def set_limits(self, limits: Limits | None) -> None:
        """Put ``limits`` in force (a fresh, full bucket), or lift them with None."""
        if limits is not None and self.routes is not None:
            problem = self.routes.check(limits.route)
            if problem is not None:
                raise FaultError(f"route: {problem}")
        self._limiter = Limiter(limits, self.clock.now()) if limits is not None else None

    # -- admission -------------------------------------------------------------------------------------------

    def _drawn(self, fault: Fault) -> bool:
        # Draw only for a real chance, so that faults at 0 or 1 leave the seeded sequence alone.
        if fault.probability >= 1:
            return True
        return fault.probability > 0 and self.rng.random() < fault.probability

    def admit(self, admission: Admission) -> Refusal | None:
        """Count a request and decide whether it is served (``None``) or refused; the stream faults drawn for
        it go into ``admission.disruption``."""
        info = admission.request
        self.counters.requests += 1
        self.counters.by_route[info.path] += 1
        self.counters.by_name[info.name] += 1
        if self._limiter is not None:
            open_streams = sum(
                n for name, n in self.counters.active_by_name.items() if self._limiter.applies_to(name)
            )
            limited = self._limiter.check(info.name, open_streams, self.clock.now())
            if limited is not None:
                return self.errors.rate_limited(limited, info, self.rng)
        hit = Hit(info, self.errors, self.rng, admission.disruption)
        for stage in ("admission", "stream"):
            for fault_id, fault in list(self._faults.items()):
                if fault.stage != stage or not fault.matches(info.name) or not self._drawn(fault):
                    continue
                self.counters.faults_applied[fault_id] += 1
                admission.applied.append(fault_id)
                refusal = fault.apply(hit)
                if refusal is not None:
                    return refusal
        return None

    def plan(self, latency: Latency) -> Plan:
        return Plan(latency, self.rng)

    def stats(self) -> dict[str, Any]:
        """``GET /_chaos/stats``: the counters as JSON."""
        c = self.counters
        return {
            "provider": self.name,
            "requests": c.requests,
            "by_route": dict(c.by_name),
            "by_path": dict(c.by_route),
            "streams_open": c.active,
            "peak_streams_open": c.peak_active,
            "refused": {
                "total": c.refused,
                "by_kind": dict(c.refused_by_kind),
                "by_status": {str(status): n for status, n in sorted(c.refused_by_status.items())},
            },
            "faults_applied": dict(c.faults_applied),
            "faults_in_force": list(self._faults),
            "limits": self.limits.model_dump(mode="json") if self.limits is not None else None,
        }

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The aiohttp middleware that routes every request of an app through this gate."""

        @web.middleware
        async def gate_middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
                return await handler(request)
            admission = Admission(await self._describe(request), Disruption(self.rng))
            request[ADMISSION_KEY] = admission
            refusal = self.admit(admission)
            if refusal is not None:
                admission.refusal = refusal
                self.counters.refused += 1
                self.counters.refused_by_kind[refusal.kind] += 1
                self.counters.refused_by_status[refusal.status] += 1
                return refusal.response()
            disruption = admission.disruption
            request[DISRUPTION_KEY] = disruption
            name = admission.request.name
            self.counters.active += 1
            self.counters.active_by_name[name] += 1
            self.counters.peak_active = max(self.counters.peak_active, self.counters.active)
            try:
                if disruption.handshake_delay_s:
                    await self.pacer.until(self.clock.now() + disruption.handshake_delay_s)
                response = await handler(request)
                if (
                    disruption.shapes_stream
                    and isinstance(response, web.Response)
                    and not response.prepared
                    and response.status < 300
                ):
                    # a body sent in one piece: the whole body is the stream's one chunk
                    return await send_whole(request, response, disruption.start(self.clock.now()), self.pacer)
                return response
            finally:
                self.counters.active -= 1
                self.counters.active_by_name[name] -= 1
                if self.counters.active_by_name[name] <= 0:
                    del self.counters.active_by_name[name]

        return gate_middleware


GATE_KEY: web.AppKey[ProviderGate] = web.AppKey("voicechaos_gate", ProviderGate)


def gate_of(app: web.Application) -> ProviderGate:
    """The gate (and so the counters) of a fake provider's app."""
    return app[GATE_KEY]


__all__ = [
    "ADMISSION_KEY",
    "CONTROL_PREFIX",
    "GATE_KEY",
    "Admission",
    "DuplicateFault",
    "Pacer",
    "Plan",
    "ProviderCounters",
    "ProviderGate",
    "Refusal",
    "gate_of",
]
