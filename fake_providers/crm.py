"""The fake CRM / calendar / workflow API: what the reference runtime's business seams call.

Routes (the bodies the runtime sends, ``reference_runtime/workflow.py`` and ``reference_runtime/tools.py``):

- ``POST /workflow/events``: ``{"event", "objective", "data", "call_sid", "stream_sid", "caller"}`` (the
  ``HttpWorkflowClient``). Answers 200 ``{"accepted": true, "event_id", "event"}``.
- ``POST /tools``: ``{"tool", "arguments", "call_sid"}`` (the ``HttpToolRunner``); ``POST /tools/{name}``
  takes the same body with the name in the path. The JSON reply is the tool's result
  (:mod:`fake_providers.crm_tools`, or a fixed one from the config's ``results``); an unknown tool is a 404.
- ``GET /tools``: the tool names served.

Latency is drawn per request (``workflow_latency``, ``tool_latency``: distributions, in seconds, like every
fake's), failures come from faults (``{"kind": "error", "probability": 0.05}``, ``slow_first_byte``... through
the same ``/_chaos`` control API as every provider, route names ``workflow``, ``catalog`` and
``tools.<tool name>``; ``tools`` names them all).

Every request is recorded (:class:`RequestLog`): arrival on the monotonic clock (CLOCK_MONOTONIC, the same
timeline as every process on the host, so "event emitted -> event delivered" can be measured against the
runtime's own timestamps) and on the wall clock, the body, the status answered and the faults applied.
``GET /_chaos/requests`` returns them: counts since the start, bodies of the last ``keep_last`` only (bounded
memory under load).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fake_providers.chaos import ChaosSettings, provider_app, provider_gate
from fake_providers.crm_tools import CANNED_TOOLS, Tool
from fake_providers.gate import ADMISSION_KEY, CONTROL_PREFIX, Pacer, ProviderGate
from fake_providers.http import describe_errors, read_json
from fake_providers.latency import Distribution, uniform
from fake_providers.refusals import PlainErrors
from fake_providers.routes import UNMATCHED, RequestInfo, RouteTable, canonical_path
from harness.clock import Clock, MonotonicClock

ROUTES = RouteTable(("workflow", "catalog"), open_families=("tools",))
#: a recorded body longer than this (as JSON text) is cut, so one huge request cannot hog the log
_BODY_LIMIT = 16_384


class CrmConfig(ChaosSettings):
    """The fake CRM's behaviour. Defaults are a fast, healthy API."""

    model_config = ConfigDict(extra="forbid")
    route_table = ROUTES

    port: int | None = Field(default=None, ge=0, le=65535)
    #: seeds this provider's random choices; None: derived from the config file's top-level ``seed``
    seed: int | None = None
    #: seconds from a workflow event's arrival to its answer (e.g. ``{kind: uniform, low: 1, high: 3}``)
    workflow_latency: Distribution = uniform(0.02, 0.06)
    #: seconds from a tool call's arrival to its result
    tool_latency: Distribution = uniform(0.05, 0.15)
    #: request bodies kept for ``GET /_chaos/requests`` (counts are kept for ever)
    keep_last: int = Field(default=1000, ge=0)
    #: a fixed JSON result per tool name, answered instead of (or in addition to) the canned tools
    results: dict[str, Any] = Field(default_factory=dict)


class WorkflowEventBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1)
    objective: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    call_sid: str | None = None
    stream_sid: str | None = None
    caller: str | None = None


class ToolCallBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    seq: int
    method: str
    path: str
    route: str
    #: arrival, on the injected monotonic clock (CLOCK_MONOTONIC by default) and the wall clock (epoch s)
    received_monotonic: float
    received_wall: float
    answered_monotonic: float
    status: int
    body: Any
    faults: list[str] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        return (self.answered_monotonic - self.received_monotonic) * 1000

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "latency_ms": round(self.latency_ms, 3)}


class RequestLog:
    """Every request's outcome: counts for ever, the last ``keep_last`` requests in full."""

    def __init__(self, keep_last: int) -> None:
        self.total = 0
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_route_status: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._kept: deque[RecordedRequest] = deque(maxlen=keep_last)

    def record(self, entry: RecordedRequest) -> None:
        self.total += 1
        self.by_route[entry.route] += 1
        self.by_status[entry.status] += 1
        self.by_route_status[entry.route][entry.status] += 1
        if self._kept.maxlen:
            self._kept.append(entry)

    def kept(self, *, since: int = 0, route: str | None = None) -> list[RecordedRequest]:
        return [
            e
            for e in self._kept
            if e.seq > since and (route is None or e.route == route or e.route.startswith(route + "."))
        ]

    def forget_bodies(self) -> int:
        count = len(self._kept)
        self._kept.clear()
        return count

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_route": dict(self.by_route),
            "by_status": {str(s): n for s, n in sorted(self.by_status.items())},
            "by_route_status": {
                route: {str(s): n for s, n in sorted(counts.items())} for route, counts in self.by_route_status.items()
            },
            "kept": len(self._kept),
        }


def _recordable(raw: bytes) -> Any:
    """The body as JSON if it is, else as text; cut to a bounded size."""
    try:
        parsed = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return raw[:_BODY_LIMIT].decode("utf-8", "replace")
    if len(raw) > _BODY_LIMIT:
        return {"truncated": True, "text": raw[:_BODY_LIMIT].decode("utf-8", "replace")}
    return parsed


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


async def _describe(request: web.Request) -> RequestInfo:
    path = canonical_path(request)
    if request.method == "POST" and path == "/workflow/events":
        return RequestInfo(path, "workflow")
    if request.method == "GET" and path == "/tools":
        return RequestInfo(path, "catalog")
    if request.method == "POST" and path == "/tools/{name}":
        return RequestInfo(path, f"tools.{request.match_info['name']}")
    if request.method == "POST" and path == "/tools":
        try:
            body = json.loads(await request.read() or b"null")  # aiohttp keeps the body for the handler
        except (ValueError, UnicodeDecodeError):
            body = None
        tool = body.get("tool") if isinstance(body, dict) else None
        return RequestInfo(path, f"tools.{tool}" if isinstance(tool, str) and tool else "tools")
    return RequestInfo(path, UNMATCHED)


class _Crm:
    def __init__(
        self,
        config: CrmConfig,
        gate: ProviderGate,
        pacer: Pacer,
        tools: Mapping[str, Tool],
        wall: Callable[[], float],
    ) -> None:
        self.config = config
        self.gate = gate
        self.pacer = pacer
        self.tools = tools
        self.wall = wall
        self.log = RequestLog(config.keep_last)
        self._seq = 0
        self._events = 0

    def tool_names(self) -> list[str]:
        return sorted({*self.tools, *self.config.results})

    async def _delay(self, distribution: Distribution) -> None:
        await self.pacer.until(self.pacer.clock.now() + distribution.sample(self.gate.rng))

    # -- the API ---------------------------------------------------------------------------------------------

    async def workflow_event(self, request: web.Request) -> web.StreamResponse:
        try:
            body = WorkflowEventBody.model_validate(await read_json(request))
        except ValidationError as exc:
            return _error(400, "invalid_body", describe_errors(exc))
        except ValueError as exc:
            return _error(400, "invalid_body", str(exc))
        await self._delay(self.config.workflow_latency)
        self._events += 1
        return web.json_response({"accepted": True, "event_id": f"evt_{self._events:06d}", "event": body.event})

    async def tool_call(self, request: web.Request) -> web.StreamResponse:
        try:
            body = ToolCallBody.model_validate(await read_json(request))
        except ValidationError as exc:
            return _error(400, "invalid_body", describe_errors(exc))
        except ValueError as exc:
            return _error(400, "invalid_body", str(exc))
        in_path = request.match_info.get("name")
        if in_path is not None and body.tool not in (None, in_path):
            return _error(400, "invalid_body", f"tool: {body.tool!r} in the body but {in_path!r} in the path")
        name = in_path or body.tool
        if not name:
            return _error(400, "invalid_body", 'tool: missing (POST /tools needs {"tool": <name>, ...})')
        if name not in self.config.results and name not in self.tools:
            return _error(404, "unknown_tool", f"no tool {name!r}", tools=self.tool_names())
        await self._delay(self.config.tool_latency)
        if name in self.config.results:
            return web.json_response(self.config.results[name])
        return web.json_response(self.tools[name](body.arguments, body.call_sid))

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"tools": self.tool_names()})

    # -- recording -------------------------------------------------------------------------------------------

    def recorder(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The middleware, outside the gate, that records each request with the status it was answered."""

        @web.middleware
        async def record(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path.startswith(CONTROL_PREFIX):
                return await handler(request)
            clock = self.pacer.clock
            received, received_wall = clock.now(), self.wall()
            raw = await request.read()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                admission = request.get(ADMISSION_KEY)
                self._seq += 1
                self.log.record(
                    RecordedRequest(
                        seq=self._seq,
                        method=request.method,
                        path=request.path,
                        route=admission.request.name if admission is not None else UNMATCHED,
                        received_monotonic=received,
                        received_wall=received_wall,
                        answered_monotonic=clock.now(),
                        status=status,
                        body=_recordable(raw),
                        faults=list(admission.applied) if admission is not None else [],
                    )
                )

        return record

    async def requests(self, request: web.Request) -> web.Response:
        """``GET /_chaos/requests?since=<seq>&route=<filter>``: counts and the kept requests after ``since``."""
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": "since: must be an integer"}, status=400)
        entries = self.log.kept(since=since, route=request.query.get("route"))
        return web.json_response({**self.log.summary(), "requests": [e.to_json() for e in entries]})

    async def forget_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"forgotten": self.log.forget_bodies(), "total": self.log.total})


CRM_KEY: web.AppKey[RequestLog] = web.AppKey("voicechaos_crm_log", RequestLog)


def create_crm_app(
    config: CrmConfig | None = None,
    *,
    rng: random.Random | None = None,
    clock: Clock | None = None,
    wall: Callable[[], float] = time.time,
    tools: Mapping[str, Tool] = CANNED_TOOLS,
) -> web.Application:
    """A fake CRM / calendar / workflow API as an aiohttp app; ``tools`` is the tool registry it serves."""
    config = config or CrmConfig()
    clock = clock or MonotonicClock()
    gate = provider_gate(
        "crm",
        config,
        rng=rng or random.Random(config.seed or 0),
        clock=clock,
        errors=PlainErrors(),
        describe=_describe,
    )
    server = _Crm(config, gate, Pacer(clock), tools, wall)
    app = provider_app(gate, outer=[server.recorder()])
    app[CRM_KEY] = server.log
    app.router.add_post("/workflow/events", server.workflow_event)
    app.router.add_post("/tools", server.tool_call)
    app.router.add_post("/tools/{name}", server.tool_call)
    app.router.add_get("/tools", server.catalog)
    app.router.add_get(f"{CONTROL_PREFIX}/requests", server.requests)
    app.router.add_delete(f"{CONTROL_PREFIX}/requests", server.forget_requests)
    return app


def request_log_of(app: web.Application) -> RequestLog:
    """The request log of a CRM app (what ``GET /_chaos/requests`` shows)."""
    return app[CRM_KEY]


__all__ = ["CrmConfig", "RecordedRequest", "RequestLog", "create_crm_app", "request_log_of"]
