"""``truncate``: the stream ends abnormally partway (``after_chunks`` / ``after_ms``). HTTP: the connection
is closed mid-body (the client sees an incomplete chunked body or Content-Length); websocket: the connection
is dropped without a close frame (the client sees 1006), or closed with ``close_code`` if set."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from fake_providers.disruption import Cut
from fake_providers.faults.base import Hit, TriggeredFault

#: close codes an endpoint must not send in a close frame (RFC 6455 7.4.1)
_RESERVED = {1004, 1005, 1006, 1015}


class TruncateFault(TriggeredFault):
    stage: ClassVar[Literal["stream"]] = "stream"

    kind: Literal["truncate"] = "truncate"
    close_code: int | None = Field(default=None, ge=1000, le=4999)

    @field_validator("close_code")
    @classmethod
    def _sendable(cls, code: int | None) -> int | None:
        if code in _RESERVED:
            raise ValueError(f"{code} cannot be sent in a close frame (RFC 6455 7.4.1); null drops the connection")
        return code

    def apply(self, hit: Hit) -> None:
        hit.disruption.cuts.append(Cut(self.trigger(), self.close_code))
