"""The one interface every fault implements (the contract is in ``fake_providers/FAULTS.md``).

A fault is a typed config whose fields ARE its JSON (``POST /_chaos/faults`` body, a config file's ``faults:``
entry), validated whole before it is used. The gate draws it per request (``probability``, with the provider's
seeded generator) for the requests its ``route`` filter matches, then calls :meth:`Fault.apply` with a
:class:`Hit`: an ``admission`` fault may return the :class:`~fake_providers.refusals.Refusal` the client gets
instead of a response; a ``stream`` fault adds to the request's
:class:`~fake_providers.disruption.Disruption` (what happens to the response's chunks). ``apply`` never
waits, sleeps or touches a socket: the adapters do what the disruption says.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fake_providers.disruption import Disruption, Trigger
from fake_providers.refusals import ProviderErrors, Refusal
from fake_providers.routes import RequestInfo, RouteFilter, route_matches


@dataclass(frozen=True, slots=True)
class Hit:
    """A request a fault was drawn for: what it is, how its provider refuses, what will shape its response."""

    request: RequestInfo
    errors: ProviderErrors
    rng: random.Random
    disruption: Disruption


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``admission``: may refuse the request (drawn before the handler); ``stream``: shapes its response
    stage: ClassVar[Literal["admission", "stream"]]

    kind: str
    #: the share of matching requests (an HTTP request, or a websocket at its handshake) the fault hits
    probability: float = Field(default=1.0, ge=0, le=1)
    #: the routes it applies to (a provider's route names, or a family: ``speak``); None: every route
    route: RouteFilter = None

    def matches(self, route_name: str) -> bool:
        return route_matches(self.route, route_name)

    @abstractmethod
    def apply(self, hit: Hit) -> Refusal | None:
        """Refuse the request (``admission`` faults) or add to ``hit.disruption`` and return None."""

    def describe(self) -> dict[str, object]:
        """The fault's JSON, as the control API lists it."""
        return self.model_dump(mode="json")


class TriggeredFault(Fault):
    """A fault that happens partway through a stream: after ``after_chunks`` chunks, or ``after_ms`` into it
    (set one; neither means ``after_chunks: 1``: something arrives, then the fault)."""

    after_chunks: int | None = Field(default=None, ge=0)
    after_ms: float | None = Field(default=None, ge=0)

    @field_validator("after_ms")
    @classmethod
    def _one_trigger(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("after_chunks") is not None:
            raise ValueError("set after_chunks or after_ms, not both")
        return value

    def trigger(self) -> Trigger:
        if self.after_ms is not None:
            return Trigger(after_s=self.after_ms / 1000)
        return Trigger(after_chunks=1 if self.after_chunks is None else self.after_chunks)
