"""Faults, in Chaos Toolkit's vocabulary: each fault in a scenario's timeline is an *action* (the method) with its
*rollback*, applied to one *dependency* of the runtime at a time and for a duration.

A fault is one of four things:

- ``toxic``: a Toxiproxy toxic on the dependency's proxy (network faults: latency, bandwidth, timeout, reset...);
- ``down``: the dependency's proxy disabled (connections refused and cut: the dependency is gone);
- ``provider``: an application fault in the fake provider behind the dependency, through its control API (HTTP 429
  with the provider's real body, 5xx, a slow first byte, a stall, a truncated stream, garbage), which Toxiproxy
  cannot make;
- ``impairment``: loss, burst loss, jitter, reordering or a blackout on the WebRTC callers' media path (target
  ``caller_leg`` only), applied by the harness's UDP relay (:mod:`harness.webrtc.impairment` says what it models).

This module holds the typed scenario models (validated whole before a run starts) and the actions that apply and
roll back each kind. The timeline that schedules them is :mod:`harness.chaos.timeline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fake_providers.faults import FAULT_KINDS, FaultError, parse_fault
from harness.chaos.toxiproxy_client import ToxicSpec, ToxiproxyClient
from harness.webrtc.impairment import Impairment

#: every connection from the reference runtime to a dependency goes through a proxy named after it
#: (the ``*_fallback`` ones are the providers the runtime falls back to when the primary fails: safeguard 4)
#: ``caller_leg`` is the other side: the callers' Media Streams websockets to the runtime, through their own proxy
#: (the network between the phone network's edge and the platform)
DEPENDENCIES: tuple[str, ...] = ("stt", "tts", "llm", "crm", "storage", "stt_fallback", "tts_fallback",
                                 "llm_fallback", "caller_leg")
#: dependencies whose fake has a control API for application faults (object storage is a real S3 server; the
#: caller leg is a network path)
PROVIDER_FAULT_TARGETS: tuple[str, ...] = tuple(d for d in DEPENDENCIES if d not in ("storage", "caller_leg"))

#: Toxiproxy's toxic types and their attributes (shared/protocols/toxiproxy.md, "Toxics"); all are integers >= 0
TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
    "noop": (),
}

#: application fault kinds the fakes implement (fake_providers' control API)
PROVIDER_FAULT_KINDS: tuple[str, ...] = tuple(FAULT_KINDS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toxic(_Model):
    type: str
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(1.0, ge=0, le=1, description="share of connections the toxic applies to")
    attributes: dict[str, int] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TOXIC_ATTRIBUTES:
            raise ValueError(f"unknown toxic type {value!r}; one of {', '.join(TOXIC_ATTRIBUTES)}")
        return value

    @model_validator(mode="after")
    def _known_attributes(self) -> Toxic:
        allowed = TOXIC_ATTRIBUTES[self.type]
        for name, value in self.attributes.items():
            if name not in allowed:
                raise ValueError(f"{self.type} has no attribute {name!r}; it has {', '.join(allowed) or 'none'}")
            if value < 0:
                raise ValueError(f"attribute {name!r} must be >= 0")
        return self


class ProviderFault(_Model):
    """An application fault for the fake behind the dependency. ``kind`` and ``probability`` are common; the other
    fields depend on the kind and are checked by the fake's own fault model (see ``fake_providers``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str
    probability: float = Field(1.0, ge=0, le=1)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in PROVIDER_FAULT_KINDS:
            raise ValueError(f"unknown provider fault kind {value!r}; one of {', '.join(PROVIDER_FAULT_KINDS)}")
        return value

    @model_validator(mode="after")
    def _valid_for_the_fakes(self) -> ProviderFault:
        # the same typed model the fakes' control API validates with: a bad field is found before the run
        try:
            parse_fault(self.body())
        except FaultError as exc:
            raise ValueError(str(exc)) from None
        return self

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Fault(_Model):
    """One entry of the fault timeline: ``at`` seconds after the load starts, for ``duration`` seconds (until the
    end of the run when omitted), one action on one dependency."""

    name: str | None = Field(None, description="a label for logs and the summary (default: derived)")
    target: str
    at: float = Field(0.0, ge=0, description="seconds after the first call is placed")
    duration: float | None = Field(None, gt=0, description="seconds; omitted: until the run ends")
    toxic: Toxic | None = None
    down: bool = False
    provider: ProviderFault | None = None
    impairment: Impairment | None = Field(None, description="caller_leg only: what the WebRTC callers' network "
                                                            "does to their media packets, both ways")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in DEPENDENCIES:
            raise ValueError(f"unknown dependency {value!r}; one of {', '.join(DEPENDENCIES)}")
        return value

    @model_validator(mode="after")
    def _one_action(self) -> Fault:
        chosen = [k for k, v in (("toxic", self.toxic), ("down", self.down or None), ("provider", self.provider),
                                 ("impairment", self.impairment)) if v is not None]
        if len(chosen) != 1:
            raise ValueError(f"a fault is exactly one of toxic, down, provider, impairment (got {chosen or 'none'})")
        if self.impairment is not None and self.target != "caller_leg":
            raise ValueError(f"an impairment acts on the WebRTC callers' media path: its target is caller_leg, not "
                             f"{self.target!r}")
        if self.impairment is not None and self.impairment.blackout_at is not None:
            raise ValueError("impairment.blackout_at: in the timeline a blackout is the fault's own window: give "
                             "impairment.loss_pct: 100 with the fault's at and duration")
        if self.provider is not None and self.target not in PROVIDER_FAULT_TARGETS:
            why = "it is a real S3 server" if self.target == "storage" else "it is a network path"
            raise ValueError(f"{self.target!r} has no provider faults ({why}); use a toxic or down")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.toxic is not None:
            what = f"{self.toxic.type} toxic"
        elif self.provider is not None:
            what = f"provider {self.provider.kind}"
        elif self.impairment is not None:
            what = "impairment " + ", ".join(f"{k} {v:g}" for k, v in
                                             self.impairment.model_dump(exclude_defaults=True).items())
        else:
            what = "down"
        return f"{self.target} {what}"

    @property
    def action(self) -> str:
        if self.impairment is not None:
            return "impairment"
        return "toxic" if self.toxic is not None else "provider" if self.provider is not None else "down"

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --- actions ----------------------------------------------------------------------------------------------------------


class FaultAction(Protocol):
    """Apply a fault, and roll it back. ``rollback`` is safe to call after a failed or partial ``apply``."""

    async def apply(self) -> dict[str, Any]: ...

    async def rollback(self) -> None: ...


@dataclass
class ToxicAction:
    client: ToxiproxyClient
    proxy: str
    toxic: ToxicSpec

    async def apply(self) -> dict[str, Any]:
        name = await self.client.add_toxic(self.proxy, self.toxic)
        return {"proxy": self.proxy, "toxic": name}

    async def rollback(self) -> None:
        if self.toxic.resolved_name in await self.client.toxics(self.proxy):
            await self.client.remove_toxic(self.proxy, self.toxic.resolved_name)


@dataclass
class ProxyDownAction:
    client: ToxiproxyClient
    proxy: str

    async def apply(self) -> dict[str, Any]:
        await self.client.set_enabled(self.proxy, False)
        return {"proxy": self.proxy, "enabled": False}

    async def rollback(self) -> None:
        await self.client.set_enabled(self.proxy, True)


class ProviderControlError(RuntimeError):
    pass


@dataclass
class ProviderFaultAction:
    """Adds the fault through the fake's control API (``POST {control_url}/faults``) and removes it by id."""

    http: aiohttp.ClientSession
    control_url: str
    fault: ProviderFault
    timeout_s: float = 5.0
    fault_id: str | None = None

    async def apply(self) -> dict[str, Any]:
        url = f"{self.control_url}/faults"
        try:
            async with self.http.post(url, json=self.fault.body(),
                                      timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as response:
                text = await response.text()
                if response.status >= 300:
                    raise ProviderControlError(f"{url}: HTTP {response.status}: {text.strip()[:300]}")
                self.fault_id = str((await response.json(content_type=None))["id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderControlError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        return {"control_url": self.control_url, "fault_id": self.fault_id}

    async def rollback(self) -> None:
        if self.fault_id is None:
            return
        url = f"{self.control_url}/faults/{self.fault_id}"
        try:
            async with self.http.delete(url, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as response:
                if response.status not in (200, 204, 404):  # 404: already gone (the fake restarted)
                    raise ProviderControlError(f"{url}: HTTP {response.status}: {(await response.text())[:300]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderControlError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        self.fault_id = None


class CallerLegNetwork(Protocol):
    """Where WebRTC impairments go (:class:`harness.webrtc.leg.CallerLeg`)."""

    def set_impairment(self, impairment: Impairment) -> None: ...


@dataclass
class ImpairmentAction:
    """Sets the caller leg's impairment for every WebRTC call in progress and to come; the rollback restores a clean
    path. Two impairments overlapping in time do not add up: the later replaces the earlier until it ends."""

    leg: CallerLegNetwork
    impairment: Impairment

    async def apply(self) -> dict[str, Any]:
        self.leg.set_impairment(self.impairment)
        return {"impairment": self.impairment.model_dump(mode="json", exclude_defaults=True)}

    async def rollback(self) -> None:
        self.leg.set_impairment(Impairment())
