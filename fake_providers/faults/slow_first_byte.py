"""``slow_first_byte``: the response's first chunk (HTTP: its headers and first bytes; websocket: its first
frame, e.g. the first transcript) comes ``delay_ms`` later than it would have, and the rest of the stream
with it; ``at: handshake`` delays the handshake itself (the 101 of a websocket, the headers of any response).
With ``max_delay_ms`` the delay is drawn uniformly between the two, per request."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from fake_providers.faults.base import Fault, Hit


class SlowFirstByteFault(Fault):
    stage: ClassVar[Literal["stream"]] = "stream"

    kind: Literal["slow_first_byte"] = "slow_first_byte"
    delay_ms: float = Field(ge=0)
    max_delay_ms: float | None = Field(default=None, ge=0)
    at: Literal["first_byte", "handshake"] = "first_byte"

    @field_validator("max_delay_ms")
    @classmethod
    def _ordered(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("delay_ms")
        if value is not None and low is not None and value < low:
            raise ValueError(f"{value:g} is below delay_ms ({low:g})")
        return value

    def apply(self, hit: Hit) -> None:
        delay_ms = self.delay_ms
        if self.max_delay_ms is not None:
            delay_ms = hit.rng.uniform(self.delay_ms, self.max_delay_ms)
        if self.at == "handshake":
            hit.disruption.handshake_delay_s += delay_ms / 1000
        else:
            hit.disruption.first_byte_delay_s += delay_ms / 1000
