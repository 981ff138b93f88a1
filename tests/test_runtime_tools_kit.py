"""A test kit (no tests here) for the turn logic of safeguards 3 and 6: one :class:`~reference_runtime.call.Call`
of a real runtime (``create_app``, started without a socket), driven through its own entry points (Twilio
messages in, STT transcripts in, Twilio messages out) with in-memory providers and a manual clock.

Nothing sleeps and nothing is timed on the wall clock: the slow dependency (workflow API, tool) is a
:class:`Gate` the test opens, and opening it moves the manual clock by the dependency's latency. So "the reply's
first audio came 1.5 s after the caller's turn" is an exact statement on the runtime's own clock, and "the reply
was spoken while the CRM was still busy" is an ordering, not a race.

The agent (dialog and the scripted LLM's rules) comes from ``scenarios/agents/*.yaml``, the files the incident
runs use, so these tests also check that the agents' scripts and the dialog fit together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from fake_providers.crm import CrmConfig, create_crm_app, request_log_of
from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from fake_providers.openai_script import Conversation, Rule, choose_reply
from fake_providers.serve import serve_app
from harness.audio.formats import AudioFormat
from harness.clock import ManualClock
from reference_runtime.app import RUNTIME, Runtime, create_app
from reference_runtime.audio_plan import plan_from_config
from reference_runtime.call import Call
from reference_runtime.config import RuntimeConfig, parse_config
from reference_runtime.dialog import LlmReply, LlmRequest, ToolCall, ToolResult, WorkflowEvent
from reference_runtime.providers.base import LlmChunk, Providers, ReplyDone, TextDelta, Transcript
from reference_runtime.recording import MemoryRecordingSink
from reference_runtime.twilio_link import TwilioMediaLink
from reference_runtime.workflow import CallContext, WorkflowError
from tests.in_process import with_pytest_memory
from tests.test_runtime_call import FAST, TwilioSide, decode

AGENTS = Path(__file__).resolve().parent.parent / "scenarios" / "agents"
#: generous: only reached when something is broken
STEP_TIMEOUT_S = 20.0


def agent(name: str) -> dict[str, Any]:
    return yaml.safe_load((AGENTS / f"{name}.yaml").read_text(encoding="utf-8"))


def agent_config(name: str, **overrides: Any) -> RuntimeConfig:
    """The runtime config of agent ``name`` (its dialog), with top-level ``overrides`` (``safeguards``...)."""
    data: dict[str, Any] = {
        "providers": {
            "stt": {"kind": "deepgram", "base_url": "http://127.0.0.1:9"},
            "llm": {"kind": "openai", "base_url": "http://127.0.0.1:9"},
            "tts": {"kind": "elevenlabs", "base_url": "http://127.0.0.1:9"},
        },
        "dialog": agent(name)["runtime"]["dialog"],
    }
    data.update(overrides)
    return parse_config(with_pytest_memory(data))


# --- the slow dependency --------------------------------------------------------------------------------------


class Gate:
    """A dependency call that waits until the test opens the gate; opening it moves the clock by ``latency_s``
    (the time the dependency took) before the call returns. ``entered`` is set when a call is waiting."""

    def __init__(self, clock: ManualClock, latency_s: float) -> None:
        self.clock = clock
        self.latency_s = latency_s
        self.entered = asyncio.Event()
        self.calls = 0
        self._open = asyncio.Event()

    async def pass_through(self) -> None:
        self.calls += 1
        self.entered.set()
        await self._open.wait()
        self.clock.advance(self.latency_s)

    def open(self) -> None:
        self._open.set()

    async def wait_entered(self) -> None:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self.entered.wait()


class GatedWorkflow:
    """A WorkflowClient behind a :class:`Gate`; ``failures`` first attempts raise ``WorkflowError(reason)``."""

    def __init__(self, gate: Gate, *, failures: int = 0, reason: str = "http_503") -> None:
        self.gate = gate
        self.failures = failures
        self.reason = reason
        self.delivered: list[tuple[WorkflowEvent, CallContext]] = []
        self.attempts = 0

    async def emit(self, event: WorkflowEvent, call: CallContext) -> None:
        self.attempts += 1
        await self.gate.pass_through()
        if self.attempts <= self.failures:
            raise WorkflowError(f"CRM answered {self.reason}", reason=self.reason)
        self.delivered.append((event, call))


class GatedTools:
    """A ToolRunner behind a :class:`Gate`, answering ``{"tool": name, "ok": true}``."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall, context: CallContext) -> ToolResult:
        self.calls.append(call)
        await self.gate.pass_through()
        return ToolResult(call, json.dumps({"tool": call.name, "ok": True}))


# --- in-memory providers --------------------------------------------------------------------------------------


class ScriptedLlm:
    """The fake OpenAI's scripted model (fake_providers/openai_script.py) without HTTP: the agent's rules
    choose each reply from the request the dialog built. Every request is kept."""

    name = "scripted"

    def __init__(self, rules: list[Rule], default_reply: str) -> None:
        self.rules = rules
        self.default_reply = default_reply
        self.requests: list[LlmRequest] = []
        self._rng = random.Random(0)
        self._ids = itertools.count(1)

    @classmethod
    def of_agent(cls, name: str) -> ScriptedLlm:
        script = agent(name)["providers"]["openai"]
        return cls([Rule.model_validate(r) for r in script["script"]], script["default_reply"])

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        self.requests.append(request)
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        reply = choose_reply(self.rules, self.default_reply, Conversation.of(messages), self._rng)
        if reply.content:
            yield TextDelta(reply.content)
        calls = tuple(ToolCall(f"call_{next(self._ids)}", c.name, c.arguments) for c in reply.tool_calls)
        yield ReplyDone(LlmReply(reply.content or "", calls))


class EchoTts:
    """Speaks a sentence as its own UTF-8 bytes (the call passes μ-law 8 kHz through untouched), so each
    ``media`` message the call sends can be read back as the sentence it carries."""

    name = "echo"

    async def synthesize(self, text: str, audio_format: AudioFormat) -> AsyncIterator[bytes]:
        yield text.encode("utf-8")


class PushedStt:
    """The STT stream gives the call whatever transcripts the test pushes (:meth:`CallDriver.caller_says`).
    ``handled`` is set while the call's reader waits for the next one: everything pushed has been handled."""

    name = "pushed"

    def __init__(self) -> None:
        self.pushed: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self.handled = asyncio.Event()

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> PushedStt:
        return self

    async def send_audio(self, audio: bytes) -> None:
        pass

    async def events(self) -> AsyncIterator[Transcript]:
        while True:
            self.handled.set()
            event = await self.pushed.get()
            if event is None:
                return
            yield event

    def push(self, event: Transcript | None) -> None:
        self.handled.clear()
        self.pushed.put_nowait(event)

    async def close(self) -> None:
        self.push(None)


# --- the Twilio side ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    at: float  # on the runtime's (manual) clock
    text: str


@dataclass
class TwilioLoop:
    """The call's Twilio websocket (a :class:`~reference_runtime.twilio_link.TextSocket` under the call's
    :class:`~reference_runtime.twilio_link.TwilioMediaLink`) and its inbound messages: media sent is heard (decoded
    to its sentence), marks are echoed at once (playout is not what these tests measure), closing ends the inbound
    stream."""

    clock: ManualClock
    inbound: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    heard: list[Heard] = field(default_factory=list)
    closed: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def send(self, text: str) -> None:
        message = json.loads(text)
        if message["event"] == "media":
            sentence = base64.b64decode(message["media"]["payload"]).decode("utf-8")
            self.heard.append(Heard(self.clock.now(), sentence))
            async with self._changed:
                self._changed.notify_all()
        elif message["event"] == "mark":
            self.push("mark", mark={"name": message["mark"]["name"]})

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        self.inbound.put_nowait(None)

    def push(self, event: str, **body: Any) -> None:
        self.inbound.put_nowait(json.dumps({"event": event, "streamSid": "MZ1", **body}))

    async def messages(self) -> AsyncIterator[str]:
        while (text := await self.inbound.get()) is not None:
            yield text

    async def wait_heard(self, count: int) -> list[Heard]:
        """Wait until ``count`` sentences have been heard in all; returns them all."""
        async with asyncio.timeout(STEP_TIMEOUT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.heard) >= count)
        return list(self.heard)


@dataclass
class CallDriver:
    runtime: Runtime
    call: Call
    link: TwilioLoop
    stt: PushedStt
    llm: ScriptedLlm
    clock: ManualClock
    task: asyncio.Task[str]

    def texts(self) -> list[str]:
        return [h.text for h in self.link.heard]

    def caller_says(self, text: str) -> None:
        self.stt.push(Transcript(text, is_final=True, speech_final=True, start=0.0, duration=1.0))

    async def turn_done(self) -> None:
        """Wait until the response in flight (greeting or reply) has finished."""
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                response = self.call._response
                if response is not None and not response.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(response)
                if self.call._response is response:
                    return

    async def say_and_wait(self, text: str) -> None:
        """The caller speaks; wait until the call has taken the turn, then until its reply is over."""
        self.caller_says(text)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self.stt.handled.wait()
        await self.turn_done()

    def sample(self, name: str, **labels: str) -> float:
        value = self.runtime.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def call_of(
    config: RuntimeConfig,
    llm: ScriptedLlm,
    *,
    clock: ManualClock,
    workflow: Any = None,
    tools: Any = None,
) -> AsyncIterator[CallDriver]:
    """One call of a started runtime (its workers running, no socket), greeted and ready for the caller."""
    stt = PushedStt()
    app = create_app(
        config,
        clock=clock,
        recording_sink=MemoryRecordingSink(),
        workflow_client=workflow,
        tool_runner=tools,
        providers=Providers(stt=stt, llm=llm, tts=EchoTts()),  # type: ignore[arg-type]
        audio_planner=plan_from_config,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    runtime = app[RUNTIME]
    link = TwilioLoop(clock)
    twilio = TwilioMediaLink(link)
    call = Call("call-1", twilio, runtime.services())
    task = asyncio.create_task(call.run(twilio.events(link.messages())))
    driver = CallDriver(runtime, call, link, stt, llm, clock, task)
    try:
        link.push("connected", protocol="Call", version="1.0.0")
        link.push(
            "start",
            start={
                "accountSid": "AC1",
                "streamSid": "MZ1",
                "callSid": "CA1",
                "tracks": ["inbound"],
                "customParameters": {"caller": "+15550001111"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
        await link.wait_heard(1)
        await driver.turn_done()
        yield driver
    finally:
        if not task.done():
            link.push("stop", stop={"accountSid": "AC1", "callSid": "CA1"})
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await task
        await runner.cleanup()


# --- end to end: the runtime on loopback against the fakes, the CRM fake included --------------------------------


@dataclass
class CrmStack:
    """Duck-types the ``Stack`` of tests/test_runtime_call.py for its :class:`TwilioSide` (``url``, ``http``)."""

    url: str
    http: aiohttp.ClientSession
    app: web.Application
    crm_app: web.Application

    async def dial(self) -> TwilioSide:
        return await TwilioSide.dial(self)  # type: ignore[arg-type]

    async def idle(self) -> None:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self.app[RUNTIME].admission.wait_idle()

    def crm_answered(self, route: str) -> list[float]:
        """When the CRM answered each request of ``route`` (``time.monotonic``, as this process sees it)."""
        return [r.answered_monotonic for r in request_log_of(self.crm_app).kept(route=route)]

    def sample(self, name: str, **labels: str) -> float:
        value = self.app[RUNTIME].metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def crm_stack(
    agent_name: str, *, safeguards: dict[str, str], crm: dict[str, Any], **overrides: Any
) -> AsyncIterator[CrmStack]:
    """The runtime with agent ``agent_name``, its workflow and tool seams on the fake CRM (``crm``: its config,
    e.g. ``{"tool_latency": 2.0}``); ``overrides`` are merged into the runtime config's sections."""
    script = agent(agent_name)["providers"]["openai"]
    deepgram = create_deepgram_app(DeepgramConfig.model_validate({"stt": FAST, "tts": FAST}))
    elevenlabs = create_elevenlabs_app(ElevenLabsConfig.model_validate({"latency": FAST}))
    openai = create_openai_app(OpenAIConfig.model_validate({**script, "latency": FAST}))
    crm_app = create_crm_app(CrmConfig.model_validate(crm))
    async with (
        serve_app(deepgram) as stt,
        serve_app(elevenlabs) as tts,
        serve_app(openai) as llm,
        serve_app(crm_app) as crm_url,
    ):
        data: dict[str, Any] = {
            "capacity": 2,
            "providers": {
                "stt": {"kind": "deepgram", "base_url": stt, "endpointing_ms": 100, "utterance_end_ms": 1000},
                "llm": {"kind": "openai", "base_url": llm, "timeout_s": 5},
                "tts": {"kind": "elevenlabs", "base_url": tts, "voice_id": "test-voice"},
            },
            "dialog": agent(agent_name)["runtime"]["dialog"],
            "safeguards": safeguards,
        }
        data["workflow"] = {"url": f"{crm_url}/workflow/events", **overrides.pop("workflow", {})}
        data["tools"] = {"url": f"{crm_url}/tools", **overrides.pop("tools", {})}
        data.update(overrides)
        config = parse_config(with_pytest_memory(data))
        app = create_app(config, recording_sink=MemoryRecordingSink(), audio_planner=plan_from_config)
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            yield CrmStack(url, http, app, crm_app)


async def listen_timed(caller: TwilioSide, sentences: int) -> list[tuple[float, str]]:
    """Like ``TwilioSide.listen``: each sentence (one per mark) with when its first audio arrived
    (``time.monotonic``)."""
    heard: list[tuple[float, str]] = []
    audio, first = b"", None
    while len(heard) < sentences:
        message = await caller.receive()
        if message["event"] == "media":
            first = first if first is not None else time.monotonic()
            audio += base64.b64decode(message["media"]["payload"])
        elif message["event"] == "mark":
            assert first is not None, "a mark without audio"
            heard.extend((first, text) for text in decode(audio))
            audio, first = b"", None
            await caller.echo(message["mark"]["name"])
    return heard
