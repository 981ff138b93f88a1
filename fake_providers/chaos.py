"""What every provider app shares for faults: the ``faults:`` / ``limits:`` of its config section, and the
wiring of its gate and control API.

A provider's config section inherits :class:`ChaosSettings`, so faults and limits can be in force from the
start (a config file, or ``--faults``); at run time the control API (``/_chaos/...``) changes them. Route
filters are checked against the provider's :class:`~fake_providers.routes.RouteTable` when the file is
loaded, so a typo fails before anything starts.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fake_providers.control import add_control_routes
from fake_providers.faults import FaultSpec
from fake_providers.gate import GATE_KEY, ProviderGate
from fake_providers.limits import Limits
from fake_providers.refusals import ProviderErrors
from fake_providers.routes import Describer, RouteTable
from harness.clock import Clock

Middleware = Callable[..., Awaitable[web.StreamResponse]]


class ChaosSettings(BaseModel):
    """Faults and limits in force from the start (the control API changes them at run time)."""

    model_config = ConfigDict(extra="forbid")

    #: the provider's route names, which ``route`` filters are checked against
    route_table: ClassVar[RouteTable | None] = None

    #: drawn per request in this order (see fake_providers/FAULTS.md)
    faults: list[FaultSpec] = Field(default_factory=list)
    limits: Limits | None = None

    @model_validator(mode="after")
    def _known_routes(self) -> Self:
        table = type(self).route_table
        if table is None:
            return self
        for i, fault in enumerate(self.faults):
            problem = table.check(fault.route)
            if problem is not None:
                raise ValueError(f"faults.{i}.route: {problem}")
        if self.limits is not None and (problem := table.check(self.limits.route)) is not None:
            raise ValueError(f"limits.route: {problem}")
        return self


def provider_gate(
    name: str,
    settings: ChaosSettings,
    *,
    rng: random.Random,
    clock: Clock,
    errors: ProviderErrors,
    describe: Describer,
) -> ProviderGate:
    """The gate of provider ``name`` with the faults and limits of its config section in force."""
    return ProviderGate(
        name,
        rng=rng,
        clock=clock,
        errors=errors,
        routes=type(settings).route_table,
        describe=describe,
        faults=settings.faults,
        limits=settings.limits,
    )


def provider_app(gate: ProviderGate, *, outer: Sequence[Middleware] = ()) -> web.Application:
    """An app whose every request passes ``gate``, with the control API mounted; ``outer`` middlewares run
    before the gate (they see refusals too)."""
    app = web.Application(middlewares=[*outer, gate.middleware()])
    app[GATE_KEY] = gate
    add_control_routes(app, gate)
    return app
