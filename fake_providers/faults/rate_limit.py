"""``rate_limit``: the request is refused with the provider's real 429 (body and headers in
:mod:`fake_providers.refusals`); a websocket is refused at its handshake, before the upgrade."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fake_providers.faults.base import Fault, Hit
from fake_providers.refusals import RateLimited, RateLimitReason, Refusal


class RateLimitFault(Fault):
    stage: ClassVar[Literal["admission"]] = "admission"

    kind: Literal["rate_limit"] = "rate_limit"
    #: OpenAI: ``requests`` / ``tokens`` (the ``type`` and headers); ElevenLabs: ``busy`` is ``system_busy``,
    #: anything else ``too_many_concurrent_requests``; Deepgram has one body for all
    reason: RateLimitReason = "requests"
    #: what the provider tells the client to wait (OpenAI's message and reset headers, ``Retry-After``)
    retry_after_s: float = Field(default=1.0, ge=0, le=3600)
    #: None: send ``Retry-After`` where the real provider does (OpenAI); true/false force it on/off
    retry_after_header: bool | None = None

    def apply(self, hit: Hit) -> Refusal:
        limited = RateLimited(self.reason, self.retry_after_s, self.retry_after_header)
        return hit.errors.rate_limited(limited, hit.request, hit.rng)
