"""``error``: the request is answered with a 5xx and the provider's error body (a websocket: at its
handshake, before the upgrade)."""

from __future__ import annotations

from typing import ClassVar, Literal

from fake_providers.faults.base import Fault, Hit
from fake_providers.refusals import Refusal, ServerErrorStatus


class ErrorFault(Fault):
    stage: ClassVar[Literal["admission"]] = "admission"

    kind: Literal["error"] = "error"
    status: ServerErrorStatus = 500

    def apply(self, hit: Hit) -> Refusal:
        return hit.errors.server_error(self.status, hit.request, hit.rng)
