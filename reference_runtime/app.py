"""The composition root: :func:`create_app` builds one runtime (an aiohttp application) from its config and
the seams it is given, and nothing else in the package holds state.

Routes:
- ``POST /voice``   Twilio voice webhook -> TwiML ``<Connect><Stream>`` (or ``<Reject reason="busy"/>`` when
  full)
- ``GET /media``    Twilio Media Streams websocket, one :class:`~reference_runtime.call.Call` per connection
- ``POST /webrtc/offer``  WebRTC offer/answer (Pipecat SmallWebRTC shape), one call per peer connection
- ``GET /healthz``  liveness + active calls and capacity (JSON)
- ``GET /readyz``   200 while accepting calls, 503 when full or draining (SIGTERM, or the memory safeguard)
- ``GET /metrics``  Prometheus text from this app's own registry
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from harness.clock import Clock, MonotonicClock
from harness.webrtc.loopback import NonLoopbackCandidate, check_candidates
from reference_runtime import signature, twiml
from reference_runtime.admission import CLOSE_TRY_AGAIN_LATER, Admission
from reference_runtime.audio_plan import AudioPlanner, plan_audio
from reference_runtime.call import CLOSE_NORMAL, Call, CallServices, LinkClosed
from reference_runtime.compat import ensure_compatible
from reference_runtime.config import RuntimeConfig
from reference_runtime.memory import EXIT_DRAINED, CallMemoryLedger, MemoryMonitor, ProcessProbe
from reference_runtime.metrics import CONTENT_TYPE, RuntimeMetrics, process_rss_bytes
from reference_runtime.providers import Providers, build_providers
from reference_runtime.recording import RecordingSink, build_recording_sink
from reference_runtime.spool import SpoolingRecordingSink
from reference_runtime.tools import FillerPolicy, HttpToolRunner, StaticToolRunner, ToolRunner
from reference_runtime.twilio_link import TwilioMediaLink
from reference_runtime.webrtc import BadOffer, WebRtcLink, new_pc_id, parse_offer
from reference_runtime.workflow import HttpWorkflowClient, LoggingWorkflowClient, WorkflowClient, WorkflowWorker

log = logging.getLogger(__name__)

#: RFC 6455 1001 "Going Away": the process is shutting down.
CLOSE_GOING_AWAY = 1001
#: how long shutdown waits for WebRTC calls to end once their peer connections are closed (hand-over included)
WEBRTC_SHUTDOWN_WAIT_S = 5.0


@dataclass
class WebRtcCall:
    """A call served over WebRTC: it runs as a task of its own (no request handler holds it open)."""

    call_id: str
    link: WebRtcLink
    task: asyncio.Task[None]


@dataclass
class Runtime:
    """Everything one app owns. Seams left ``None`` are built from the config at startup (they need the HTTP
    session, which must be created inside the running loop)."""

    config: RuntimeConfig
    clock: Clock
    admission: Admission
    metrics: RuntimeMetrics
    audio_planner: AudioPlanner
    recording_sink: RecordingSink
    providers: Providers | None = None
    workflow: WorkflowClient | None = None
    tools: ToolRunner | None = None
    workflow_worker: WorkflowWorker | None = None
    filler_policy: FillerPolicy | None = None
    #: safeguard 5: what finished calls leave in memory, and the RSS monitor (alert, drain)
    call_memory: CallMemoryLedger | None = None
    memory_monitor: MemoryMonitor | None = None
    session: aiohttp.ClientSession | None = None
    calls: dict[str, Call] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    #: WebRTC calls in progress by ``pc_id`` (closed at shutdown like the sockets, and awaited)
    webrtc: dict[str, WebRtcCall] = field(default_factory=dict)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: why the process stops (``signal`` or ``memory``), the exit code it asks for, and details for its last line
    stop_reason: str | None = None
    exit_code: int = 0
    stop_detail: dict[str, Any] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_call_id(self) -> str:
        return f"call-{next(self._ids)}"

    def services(self) -> CallServices:
        assert self.providers is not None and self.workflow is not None and self.tools is not None
        assert self.workflow_worker is not None and self.filler_policy is not None
        return CallServices(
            config=self.config,
            providers=self.providers,
            audio_planner=self.audio_planner,
            clock=self.clock,
            metrics=self.metrics,
            recording_sink=self.recording_sink,
            workflow=self.workflow,
            tools=self.tools,
            workflow_worker=self.workflow_worker,
            filler_policy=self.filler_policy,
            call_memory=self.call_memory,
        )

    def request_stop(self, reason: str = "signal", exit_code: int = 0, detail: dict[str, Any] | None = None) -> None:
        """Drain and exit: SIGTERM/SIGINT (``signal``, exit 0 once the calls finish or ``shutdown_grace_s`` ends) or
        the memory safeguard (``memory``, exit :data:`~reference_runtime.memory.EXIT_DRAINED` once the calls in
        progress have finished). The first request decides the reason and the exit code."""
        if self.stop_reason is None:
            self.stop_reason, self.exit_code, self.stop_detail = reason, exit_code, dict(detail or {})
            self.metrics.drain_started(reason)
        self.admission.drain(reason)
        self.stop_requested.set()


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    config: RuntimeConfig,
    *,
    clock: Clock | None = None,
    recording_sink: RecordingSink | None = None,
    workflow_client: WorkflowClient | None = None,
    tool_runner: ToolRunner | None = None,
    providers: Providers | None = None,
    audio_planner: AudioPlanner = plan_audio,
    process_probe: ProcessProbe | None = None,
) -> web.Application:
    """``process_probe`` replaces the memory monitor's RSS/CPU reader (tests); the rest as the README says."""
    # Safeguard 2 (fixed): an incompatible telephony/STT/TTS config is refused here, before any call
    # (raises compat.IncompatibleConfig naming both sides); the broken way starts with whatever it is given.
    ensure_compatible(config)
    clock = clock or MonotonicClock()
    admission = Admission(config.capacity)
    metrics = RuntimeMetrics(
        active_calls=lambda: len(admission.active),
        capacity=lambda: admission.capacity,
        ready=lambda: 1.0 if admission.accepting else 0.0,
    )
    if recording_sink is None:
        # safeguard 1: broken uploads while the call waits; fixed spools and uploads in the background
        recording_sink = build_recording_sink(
            config.recording, observer=metrics, workers=config.capacity, mode=config.safeguards.recording,
            clock=clock,
        )
    runtime = Runtime(
        config=config,
        clock=clock,
        admission=admission,
        metrics=metrics,
        audio_planner=audio_planner,
        recording_sink=recording_sink,
        providers=providers,
        workflow=workflow_client,
        tools=tool_runner,
    )
    # safeguard 5: broken keeps every finished call's buffers; fixed releases them and drains at the budget
    runtime.call_memory = CallMemoryLedger(keep=config.safeguards.memory == "broken")
    metrics.watch_call_memory(runtime.call_memory)
    runtime.memory_monitor = MemoryMonitor(
        config.memory,
        config.safeguards.memory,
        clock=clock,
        probe=process_probe,
        observer=metrics,
        drain=lambda detail: runtime.request_stop("memory", EXIT_DRAINED, detail),
    )
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_post("/voice", voice_webhook)
    app.router.add_get("/media", media_stream)
    app.router.add_post("/webrtc/offer", webrtc_offer)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_background_safeguards)
    app.on_shutdown.append(_close_calls)
    return app


async def _background_safeguards(app: web.Application) -> AsyncIterator[None]:
    """The memory monitor and, in fixed recording mode, the spool's uploader (it starts with what an earlier
    process left in the spool). Stopped after the calls: the uploader gets a few seconds for an upload in flight,
    and every recording not yet stored stays in the spool for the next process."""
    runtime = app[RUNTIME]
    sink = runtime.recording_sink
    if isinstance(sink, SpoolingRecordingSink):
        sink.start()
    if runtime.memory_monitor is not None:
        runtime.memory_monitor.start()
    yield
    if runtime.memory_monitor is not None:
        await runtime.memory_monitor.stop()
    if isinstance(sink, SpoolingRecordingSink):
        await sink.stop(timeout_s=min(5.0, runtime.config.shutdown_grace_s))


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    config = runtime.config
    # No connection-pool cap: every call holds an STT websocket for its whole length, and aiohttp's default cap of
    # 100 connections would make call 101's LLM and TTS requests queue behind them (found at 100 concurrent calls:
    # a third of the replies waited ~8 s). Capacity is the runtime's own admission limit, not the pool's.
    runtime.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
    )
    if runtime.providers is None:
        runtime.providers = build_providers(
            config.providers,
            runtime.session,
            clock=runtime.clock,
            observer=runtime.metrics,
            mode=config.safeguards.providers,
            resilience=runtime.metrics,
        )
    if runtime.workflow is None:
        runtime.workflow = (
            HttpWorkflowClient(config.workflow.url, runtime.session, timeout_s=config.workflow.timeout_s)
            if config.workflow.url
            else LoggingWorkflowClient()
        )
    if runtime.tools is None:
        runtime.tools = (
            HttpToolRunner(config.tools.url, runtime.session, timeout_s=config.tools.timeout_s)
            if config.tools.url
            else StaticToolRunner(config.tools.static_results)
        )
    # safeguards 3 and 6 (used in fixed mode): the workflow worker delivers through the workflow client; the
    # filler policy learns tool latencies across this process's calls
    runtime.workflow_worker = WorkflowWorker.from_config(
        config.workflow, runtime.workflow, clock=runtime.clock, observer=runtime.metrics
    )
    runtime.workflow_worker.start()
    runtime.filler_policy = FillerPolicy.from_config(config.tools)
    yield
    # after the calls (on_shutdown closed them): deliver what is queued, count what cannot be
    undelivered = await runtime.workflow_worker.stop(config.workflow.drain_timeout_s)
    if undelivered:
        log.warning("shutdown: %d workflow event(s) left undelivered", undelivered)
    await runtime.session.close()


async def _close_calls(app: web.Application) -> None:
    runtime = app[RUNTIME]
    runtime.admission.drain()
    for ws in list(runtime.sockets):
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
    # WebRTC calls are tasks, not request handlers: aiohttp would not wait for them, and the providers' session
    # closes after this. Closing their peer connections ends them; each then hands its recording over.
    webrtc = list(runtime.webrtc.values())
    await asyncio.gather(*(call.link.close(CLOSE_GOING_AWAY, "server shutting down") for call in webrtc))
    if webrtc:
        _, pending = await asyncio.wait([call.task for call in webrtc], timeout=WEBRTC_SHUTDOWN_WAIT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


# --- the voice webhook (protocol section 1) -----------------------------------------------------------------


def _public_url(request: web.Request) -> str:
    """The URL Twilio called, as it signed it (scheme from X-Forwarded-Proto behind a TLS-terminating
    proxy)."""
    proto = request.headers.get("X-Forwarded-Proto", request.scheme)
    return str(request.url.with_scheme(proto))


def _ws_url(request: web.Request, config: RuntimeConfig) -> str:
    if config.public_ws_url:
        return config.public_ws_url
    secure = request.headers.get("X-Forwarded-Proto", request.scheme) == "https"
    return f"{'wss' if secure else 'ws'}://{request.host}/media"


async def voice_webhook(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    form = await request.post()
    params = [(name, str(value)) for name, value in form.items()]
    token = runtime.config.twilio.auth_token
    if token is not None and not signature.is_valid(
        token, _public_url(request), params, request.headers.get("X-Twilio-Signature")
    ):
        log.warning("voice webhook: bad or missing X-Twilio-Signature from %s", request.remote)
        return web.Response(status=403, text="invalid Twilio signature")
    if not runtime.admission.has_room():
        runtime.metrics.calls.labels(outcome="rejected_busy").inc()
        log.info(
            "voice webhook: rejecting call %s (%s)",
            form.get("CallSid"),
            "draining" if runtime.admission.draining else "at capacity",
        )
        return web.Response(text=twiml.reject("busy"), content_type="text/xml")
    parameters = {"caller": str(form.get("From", ""))}
    return web.Response(
        text=twiml.connect_stream(_ws_url(request, runtime.config), parameters), content_type="text/xml"
    )


# --- the media stream (protocol sections 2-4) ---------------------------------------------------------------


class AiohttpTextSocket:
    """The :class:`~reference_runtime.twilio_link.TextSocket` of a Twilio call over an aiohttp websocket (sends
    serialised)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, text: str) -> None:
        async with self._lock:
            if self._ws.closed:
                raise LinkClosed("the media websocket is closed")
            try:
                await self._ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as error:
                raise LinkClosed(str(error)) from error

    async def close(self, code: int, reason: str) -> None:
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode("utf-8"))


async def _texts(ws: web.WebSocketResponse) -> AsyncIterator[str]:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            yield message.data
        elif message.type == aiohttp.WSMsgType.ERROR:
            return


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    runtime = request.app[RUNTIME]
    # No compression: Twilio does not negotiate it, and base64 μ-law would not shrink anyway.
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    call_id = runtime.next_call_id()
    refused = runtime.admission.admit(call_id)
    if refused is not None:
        runtime.metrics.calls.labels(outcome=f"refused_{refused.reason.replace(' ', '_')}").inc()
        log.info("media stream %s refused: %s", call_id, refused.reason)
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=refused.reason.encode("utf-8"))
        return ws
    runtime.sockets.add(ws)
    try:
        link = TwilioMediaLink(AiohttpTextSocket(ws))
        call = runtime.calls[call_id] = Call(call_id, link, runtime.services())
        await call.run(link.events(_texts(ws)))
    finally:
        runtime.calls.pop(call_id, None)
        runtime.sockets.discard(ws)
        runtime.admission.release(call_id)
    return ws


# --- WebRTC (reference_runtime/webrtc.py) -------------------------------------------------------------------


def _refusal(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


async def webrtc_offer(request: web.Request) -> web.Response:
    """``POST /webrtc/offer``: a WebRTC call, in the shape of Pipecat's SmallWebRTC transport.

    Request ``{"sdp": str, "type": "offer", "pc_id"?: str | null, "restart_pc"?: bool | null}``; answer 200
    ``{"sdp": str, "type": "answer", "pc_id": str}`` once the answer is ready (every candidate in it on
    127.0.0.1); the call then runs on its own until either side hangs up. The ``pc_id`` is new for every call (it
    is the call sid of the recording); an unknown ``pc_id`` in the request is ignored.

    Refused with a JSON ``{"error": ...}`` naming what is wrong:

    - 400: the body is not JSON, not an object, ``sdp`` missing or empty, ``type`` not ``offer``, no audio m-line,
      a candidate outside loopback (named), an SDP aiortc cannot use;
    - 400: ``restart_pc: true`` or the ``pc_id`` of a call in progress: restarting or renegotiating a peer
      connection is not supported (send a new offer without ``pc_id``);
    - 503: admission refused it, exactly as ``/media`` (``"at capacity"`` or ``"draining"``; counted as
      ``refused_*`` in the calls metric).
    """
    runtime = request.app[RUNTIME]
    try:
        body = json.loads(await request.text())
    except ValueError as error:
        return _refusal(400, f"the body is not JSON: {error}")
    try:
        offer = parse_offer(body)
        check_candidates(offer.sdp, what="the offer")
    except (BadOffer, NonLoopbackCandidate) as error:
        return _refusal(400, str(error))
    if offer.restart_pc:
        return _refusal(400, "restart_pc is not supported: this runtime does not restart a peer connection; "
                             "send a new offer without pc_id")
    if offer.pc_id is not None and offer.pc_id in runtime.webrtc:
        return _refusal(400, f"pc_id {offer.pc_id} is in a call: renegotiation is not supported")
    call_id = runtime.next_call_id()
    refused = runtime.admission.admit(call_id)
    if refused is not None:
        runtime.metrics.calls.labels(outcome=f"refused_{refused.reason.replace(' ', '_')}").inc()
        log.info("webrtc offer %s refused: %s", call_id, refused.reason)
        return _refusal(503, refused.reason)
    pc_id = new_pc_id()
    link = WebRtcLink(pc_id)
    try:
        answer = await link.answer(offer.sdp)
    except Exception as error:  # aiortc refuses the SDP (ValueError, InvalidAccessError...): the caller's fault
        log.warning("webrtc offer %s: cannot answer: %s: %s", call_id, type(error).__name__, error)
        await link.close(CLOSE_NORMAL, "offer refused")
        runtime.admission.release(call_id)
        return _refusal(400, f"cannot answer the offer: {type(error).__name__}: {error}")
    call = runtime.calls[call_id] = Call(call_id, link, runtime.services())
    task = asyncio.create_task(_serve_webrtc_call(runtime, call_id, call, link), name=f"{call_id}-webrtc")
    runtime.webrtc[pc_id] = WebRtcCall(call_id, link, task)
    log.info("webrtc offer %s: answered as %s", call_id, pc_id)
    return web.json_response({"sdp": answer, "type": "answer", "pc_id": pc_id})


async def _serve_webrtc_call(runtime: Runtime, call_id: str, call: Call, link: WebRtcLink) -> None:
    try:
        await call.run(link.events())
    finally:
        await link.close(CLOSE_NORMAL, "call ended")  # no-op when the call or the caller closed it already
        runtime.calls.pop(call_id, None)
        runtime.webrtc.pop(link.pc_id, None)
        runtime.admission.release(call_id)


# --- operations ---------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    admission = runtime.admission
    body = {
        "status": "draining" if admission.draining else "ok",
        "active_calls": len(admission.active),
        "capacity": admission.capacity,
        "accepting": admission.accepting,
        "rss_bytes": int(process_rss_bytes()),
    }
    if admission.draining:
        body["drain_reason"] = admission.drain_reason
    monitor = runtime.memory_monitor
    if monitor is not None:
        body["memory_budget_bytes"] = int(monitor.budget_bytes)
        body["memory_fraction"] = round(monitor.watch.fraction, 4)
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    admission = request.app[RUNTIME].admission
    if admission.accepting:
        return web.json_response({"ready": True})
    reason = "draining" if admission.draining else "at capacity"
    body: dict[str, Any] = {"ready": False, "reason": reason}
    if admission.draining:
        body["drain_reason"] = admission.drain_reason  # "memory" (safeguard 5) or "signal"
    return web.Response(status=503, text=json.dumps(body), content_type="application/json")


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
