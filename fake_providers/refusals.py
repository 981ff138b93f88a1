"""How each provider says "no": the status, JSON body and headers of its rate limit (429) and server errors
(5xx), so that an official SDK raises exactly what it raises against the real service.

Sans-I/O: a dialect turns a decision (:class:`RateLimited`, a 5xx status) into a :class:`Refusal`; the gate
sends it. Bodies follow shared/protocols/providers.md:

- Deepgram ("Deepgram live speech-to-text", rate limit): ``{"err_code", "err_msg", "request_id"}``; a
  websocket is refused the same way, with HTTP before the upgrade. Deepgram's limits are on concurrent
  connections; it does not document a ``Retry-After``.
- ElevenLabs ("ElevenLabs text-to-speech", rate limit): ``{"detail": {"status", "message"}}`` with
  ``too_many_concurrent_requests`` or ``system_busy``; no documented ``Retry-After``.
- OpenAI ("OpenAI chat completions", rate limit): ``{"error": {"message", "type", "param", "code"}}`` with
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, ``x-request-id`` and ``retry-after`` (the SDK
  reads ``retry-after-ms`` first, then ``retry-after``).

``retry_after_header`` (None: as the real provider does) forces ``Retry-After`` on or off, for a client whose
retry logic is under test.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from aiohttp import web

from fake_providers.routes import RequestInfo

#: why a request is rate limited: OpenAI's request or token budget, a concurrency cap (ElevenLabs' and
#: Deepgram's limits), or a provider too busy to take it (ElevenLabs' ``system_busy``)
RateLimitReason = Literal["requests", "tokens", "concurrency", "busy"]

#: the 5xx statuses a fault can answer with
ServerErrorStatus = Literal[500, 502, 503, 504]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the gate turns away: the HTTP status, JSON body and headers the client receives.

    ``kind`` names what refused it in the stats (``rate_limit``, ``error``, ``limit.requests_per_second``...).
    """

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "refused"

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A rate-limit decision, from a ``rate_limit`` fault or a limiter."""

    reason: RateLimitReason
    #: when the client may try again (the limiter's exact wait, or the fault's setting)
    retry_after_s: float
    #: None: send ``Retry-After`` only if the real provider does
    retry_after_header: bool | None = None
    #: the limit in the provider's unit, when a limiter knows it (OpenAI: per minute)
    limit: int | None = None
    kind: str = "rate_limit"


class ProviderErrors(Protocol):
    """One provider's error dialect."""

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal: ...

    def server_error(
        self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error"
    ) -> Refusal: ...


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _retry_after(seconds: float) -> str:
    """``Retry-After`` is whole seconds (RFC 9110 10.2.3): round up, so a client never retries too early."""
    return str(max(0, math.ceil(seconds)))


def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``"174ms"``, ``"1.5s"``, ``"6m0s"`` (Go's time.Duration)."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class DeepgramErrors:
    _CODES: ClassVar[dict[int, tuple[str, str]]] = {
        500: ("INTERNAL_SERVER_ERROR", "Internal server error. Please try again later."),
        502: ("BAD_GATEWAY", "Bad gateway. Please try again later."),
        503: ("SERVICE_UNAVAILABLE", "Service unavailable. Please try again later."),
        504: ("GATEWAY_TIMEOUT", "Gateway timeout. Please try again later."),
    }

    def _refusal(self, status: int, code: str, message: str, rng: random.Random, kind: str) -> Refusal:
        request_id = str(_uuid(rng))
        body = {"err_code": code, "err_msg": message, "request_id": request_id}
        return Refusal(status, body, {"dg-request-id": request_id}, kind)

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        message = "Too many requests. Please try again later"
        refusal = self._refusal(429, "TOO_MANY_REQUESTS", message, rng, limited.kind)
        if limited.retry_after_header:
            refusal.headers["retry-after"] = _retry_after(limited.retry_after_s)
        return refusal

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        code, message = self._CODES.get(status, ("INTERNAL_SERVER_ERROR", "Internal server error."))
        return self._refusal(status, code, message, rng, kind)


class ElevenLabsErrors:
    _CODES: ClassVar[dict[int, tuple[str, str]]] = {
        500: ("internal_server_error", "An internal server error occurred. Please try again later."),
        502: ("bad_gateway", "Bad gateway. Please try again later."),
        503: ("service_unavailable", "The service is temporarily unavailable. Please try again later."),
        504: ("gateway_timeout", "The request timed out. Please try again later."),
    }

    def _refusal(self, status: int, code: str, message: str, rng: random.Random, kind: str) -> Refusal:
        body = {"detail": {"status": code, "message": message}}
        return Refusal(status, body, {"request-id": _uuid(rng).hex}, kind)

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        if limited.reason == "busy":
            code = "system_busy"
            message = "We're experiencing a high volume of requests right now. Please try again in a few seconds."
        else:
            code = "too_many_concurrent_requests"
            cap = f" of {limited.limit}" if limited.limit is not None else ""
            message = (
                f"Too many concurrent requests. Your subscription allows a maximum{cap} concurrent requests; "
                "wait for a request to finish or upgrade your plan."
            )
        refusal = self._refusal(429, code, message, rng, limited.kind)
        if limited.retry_after_header:
            refusal.headers["retry-after"] = _retry_after(limited.retry_after_s)
        return refusal

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        code, message = self._CODES.get(status, ("internal_server_error", "An internal server error occurred."))
        return self._refusal(status, code, message, rng, kind)


class OpenAIErrors:
    #: what the fake claims when no limiter gives a number (a tier-1 gpt-4o-mini, roughly)
    DEFAULT_RPM = 500
    DEFAULT_TPM = 200_000

    _MESSAGES: ClassVar[dict[int, str]] = {
        500: "The server had an error while processing your request. Sorry about that!",
        502: "Bad gateway.",
        503: "The server is overloaded or not ready yet.",
        504: "Gateway timeout.",
    }

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        tokens = limited.reason == "tokens"
        rpm = limited.limit if limited.limit is not None else self.DEFAULT_RPM
        wait = go_duration(limited.retry_after_s)
        model = request.model or "gpt-4o-mini"
        if tokens:
            budget = f"tokens per min (TPM): Limit {self.DEFAULT_TPM}, Used {self.DEFAULT_TPM}, Requested 1"
        else:
            budget = f"requests per min (RPM): Limit {rpm}, Used {rpm}, Requested 1"
        message = (
            f"Rate limit reached for {model} in organization org-voicechaos on {budget}. "
            f"Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        body = {
            "error": {
                "message": message,
                "type": "tokens" if tokens else "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        headers = {
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-remaining-requests": str(rpm // 2) if tokens else "0",
            "x-ratelimit-reset-requests": "0ms" if tokens else wait,
            "x-ratelimit-limit-tokens": str(self.DEFAULT_TPM),
            "x-ratelimit-remaining-tokens": "0" if tokens else str(self.DEFAULT_TPM - 1000),
            "x-ratelimit-reset-tokens": wait if tokens else "0ms",
            "x-request-id": "req_" + _uuid(rng).hex,
        }
        if limited.retry_after_header is not False:
            headers["retry-after"] = _retry_after(limited.retry_after_s)
            headers["retry-after-ms"] = str(max(0, round(limited.retry_after_s * 1000)))
        return Refusal(429, body, headers, limited.kind)

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        message = self._MESSAGES.get(status, self._MESSAGES[500])
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return Refusal(status, body, {"x-request-id": "req_" + _uuid(rng).hex}, kind)


class PlainErrors:
    """A generic JSON API (the CRM/calendar fake): ``{"error": {"code", "message"}}``, ``Retry-After`` on 429."""

    _CODES: ClassVar[dict[int, str]] = {
        500: "internal_error",
        502: "bad_gateway",
        503: "unavailable",
        504: "gateway_timeout",
    }

    def rate_limited(self, limited: RateLimited, request: RequestInfo, rng: random.Random) -> Refusal:
        body = {"error": {"code": "rate_limited", "message": "Too many requests, slow down."}}
        headers = {"x-request-id": _uuid(rng).hex}
        if limited.retry_after_header is not False:
            headers["retry-after"] = _retry_after(limited.retry_after_s)
        return Refusal(429, body, headers, limited.kind)

    def server_error(self, status: int, request: RequestInfo, rng: random.Random, *, kind: str = "error") -> Refusal:
        code = self._CODES.get(status, "internal_error")
        body = {"error": {"code": code, "message": f"{request.name} failed: {code.replace('_', ' ')}"}}
        return Refusal(status, body, {"x-request-id": _uuid(rng).hex}, kind)
