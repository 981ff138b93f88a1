"""Rate limits as real limiters: "rate limited under load" emerges from load instead of being drawn.

A provider's :class:`Limits` (config section ``limits:``, or ``POST /_chaos/limits``) set two caps, each
optional:

- ``requests_per_second`` with ``burst``: a token bucket (:class:`TokenBucket`). It starts full with ``burst``
  tokens, gains ``requests_per_second`` tokens a second up to ``burst``, and every admitted request takes one.
  A request finding less than one token is refused with the provider's 429; the wait until the next token is
  the ``Retry-After`` / OpenAI reset it announces.
- ``concurrent_streams``: requests in progress at once: an HTTP request until its last byte (a streamed
  response included), a websocket until it closes. The next one is refused with the provider's 429 (ElevenLabs:
  ``too_many_concurrent_requests``). Deepgram's and ElevenLabs' real limits are of this kind.

Both count only requests to the routes the ``route`` filter matches (every route if unset); the control
routes are never counted. Sans-I/O: the bucket is told the time (the gate's injected clock), so a test
advances a number instead of sleeping. A concurrency refusal takes no token.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from fake_providers.refusals import RateLimited
from fake_providers.routes import RouteFilter, route_matches

#: float slack so that a bucket refilled for exactly 1/rate seconds holds a whole token
_EPSILON = 1e-9


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(default=None, gt=0)
    #: the bucket's size: how many requests may come at once after a quiet spell (default: one second's worth)
    burst: int | None = Field(default=None, ge=1)
    concurrent_streams: int | None = Field(default=None, ge=0)
    route: RouteFilter = None
    #: what a concurrency refusal tells the client to wait (nothing says when a stream will end)
    concurrency_retry_after_s: float = Field(default=1.0, ge=0)

    @field_validator("burst")
    @classmethod
    def _burst_of_a_rate(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("requests_per_second") is None:
            raise ValueError("burst needs requests_per_second")
        return value

    @model_validator(mode="after")
    def _something_limited(self) -> Self:
        if self.requests_per_second is None and self.concurrent_streams is None:
            raise ValueError("set requests_per_second, concurrent_streams, or both")
        return self

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, round(self.requests_per_second or 1))


class TokenBucket:
    """``rate`` tokens a second, at most ``size``, starting full at ``now``."""

    def __init__(self, rate: float, size: int, now: float) -> None:
        self.rate = rate
        self.size = size
        self.tokens = float(size)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self.tokens = min(float(self.size), self.tokens + (now - self._updated) * self.rate)
            self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there will be (nothing is taken)."""
        self._refill(now)
        if self.tokens >= 1 - _EPSILON:
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / self.rate


class Limiter:
    """A provider's :class:`Limits` in force, with the bucket's state."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        rate = limits.requests_per_second
        self.bucket = TokenBucket(rate, limits.bucket_size, now) if rate is not None else None

    def applies_to(self, route_name: str) -> bool:
        return route_matches(self.limits.route, route_name)

    def check(self, route_name: str, open_streams: int, now: float) -> RateLimited | None:
        """Admit a request to ``route_name`` (None) or say why not; ``open_streams`` are those it counts."""
        if not self.applies_to(route_name):
            return None
        cap = self.limits.concurrent_streams
        if cap is not None and open_streams >= cap:
            retry = self.limits.concurrency_retry_after_s
            return RateLimited("concurrency", retry, limit=cap, kind="limit.concurrent_streams")
        if self.bucket is not None:
            wait = self.bucket.take(now)
            if wait > 0:
                per_minute = round(self.bucket.rate * 60)
                return RateLimited("requests", wait, limit=per_minute, kind="limit.requests_per_second")
        return None
