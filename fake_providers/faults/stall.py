"""``stall``: partway through the stream (``after_chunks`` / ``after_ms``) nothing more is sent for
``stall_ms``, without closing, then the stream resumes at its own pace; ``stall_ms: null`` stalls until the
client gives up (closes or drops the connection)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from fake_providers.disruption import Stall
from fake_providers.faults.base import Hit, TriggeredFault


class StallFault(TriggeredFault):
    stage: ClassVar[Literal["stream"]] = "stream"

    kind: Literal["stall"] = "stall"
    stall_ms: float | None = Field(default=None, ge=0)

    def apply(self, hit: Hit) -> None:
        for_s = math.inf if self.stall_ms is None else self.stall_ms / 1000
        hit.disruption.stalls.append(Stall(self.trigger(), for_s))
