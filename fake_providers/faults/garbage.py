"""``garbage``: from chunk ``after_chunks`` on, ``chunks`` chunks (null: all the rest) are replaced by what
the protocol cannot parse: non-JSON text on a websocket, random bytes for audio, a broken SSE ``data:``
line, a non-JSON body (see :func:`fake_providers.disruption.garble`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fake_providers.disruption import Garble
from fake_providers.faults.base import Fault, Hit


class GarbageFault(Fault):
    stage: ClassVar[Literal["stream"]] = "stream"

    kind: Literal["garbage"] = "garbage"
    after_chunks: int = Field(default=0, ge=0)
    chunks: int | None = Field(default=None, ge=1)

    def apply(self, hit: Hit) -> None:
        hit.disruption.garbles.append(Garble(self.after_chunks, self.chunks))
