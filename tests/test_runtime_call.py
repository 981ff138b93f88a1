"""End to end: calls through the real runtime app on loopback, against the fake Deepgram, ElevenLabs and
OpenAI servers (in-process app factories), with a minimal hand-written Twilio side speaking phrase audio.

Nothing here sleeps: every wait is on a message, a socket or an event, bounded by a timeout that only fires
when something is broken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from fake_providers.serve import serve_app
from harness.audio.formats import TWILIO_MULAW_8K, from_bytes, to_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, encode_phrase
from reference_runtime.app import RUNTIME, create_app
from reference_runtime.config import RuntimeConfig, parse_config
from reference_runtime.recording import Recording
from reference_runtime.tools import StaticToolRunner
from reference_runtime.workflow import LoggingWorkflowClient
from tests.in_process import with_pytest_memory

pytestmark = pytest.mark.e2e

#: generous: only reached when something is broken (a healthy call here takes a few seconds)
STEP_TIMEOUT_S = 20.0
#: a fast, healthy provider (a bare number is a fixed delay in the fakes' config format)
FAST = {"ttfb": 0.01, "chunk_interval": 0.0}
FRAME = 160  # 20 ms of μ-law at 8 kHz, as Twilio sends

GREETING = "Hello, this is the clinic. How can I help?"
GOODBYE = "Thank you, goodbye."
OBJECTIVES = [
    {"name": "ask", "instruction": "Ask which day suits the caller.", "next": "confirm"},
    {"name": "confirm", "instruction": "Confirm the day and time.", "next": "book"},
    {
        "name": "book",
        "instruction": "Book the appointment.",
        "next": None,
        "tool": "book_appointment",
        "event": "appointment_booked",
    },
]
SCRIPT = [
    {"if_last_user": "(?i)wednesday", "if_last_role": "user", "reply": "Wednesday it is."},
    {"if_system": r"Objective: ask\.", "reply": "Which day works for you?"},
    {
        "if_system": r"Objective: confirm\.",
        "reply": "Tuesday at ten in the morning. The doctor will see you then. Shall I book it?",
    },
    {
        "if_system": r"Objective: book\.",
        "if_last_role": "user",
        "tool_calls": [{"name": "book_appointment", "arguments": {"day": "tuesday"}}],
    },
    {
        "if_system": r"Objective: book\.",
        "if_last_role": "tool",
        "reply": "You are booked for Tuesday at ten.",
    },
]


# --- the stack ----------------------------------------------------------------------------------------------


serving = serve_app  # the fakes' own loopback server helper


class RecordingBox:
    """A RecordingSink that lets a test await the hand-over."""

    def __init__(self) -> None:
        self.recordings: list[Recording] = []
        self._stored = asyncio.Event()

    async def store(self, recording: Recording) -> None:
        self.recordings.append(recording)
        self._stored.set()

    async def next(self) -> Recording:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self._stored.wait()
        self._stored.clear()
        return self.recordings[-1]


@dataclass
class Stack:
    url: str
    app: web.Application
    http: aiohttp.ClientSession
    recordings: RecordingBox
    workflow: LoggingWorkflowClient
    tools: StaticToolRunner

    async def idle(self) -> None:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self.app[RUNTIME].admission.wait_idle()

    async def metrics(self) -> str:
        async with self.http.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return await response.text()


def runtime_config(
    stt: str, tts: str, llm: str, *, tts_kind: str = "elevenlabs", **overrides: Any
) -> RuntimeConfig:
    data: dict[str, Any] = {
        "capacity": 4,
        "providers": {
            "stt": {"kind": "deepgram", "base_url": stt, "endpointing_ms": 100, "utterance_end_ms": 1000},
            "llm": {"kind": "openai", "base_url": llm, "timeout_s": 5},
            "tts": {
                "kind": tts_kind,
                "base_url": stt if tts_kind == "deepgram" else tts,
                "voice_id": "test-voice",
            },
        },
        "dialog": {"greeting": GREETING, "objectives": OBJECTIVES, "goodbye": GOODBYE},
        "safeguards": {},
    }
    data.update(overrides)
    return parse_config(with_pytest_memory(data))


@asynccontextmanager
async def stack(
    *,
    stt_app: web.Application | None = None,
    llm_app: web.Application | None = None,
    tts_kind: str = "elevenlabs",
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The runtime against the fakes; ``stt_app``/``llm_app`` replace a fake with an in-test stand-in."""
    deepgram = stt_app or create_deepgram_app(DeepgramConfig.model_validate({"stt": FAST, "tts": FAST}))
    elevenlabs = create_elevenlabs_app(ElevenLabsConfig.model_validate({"latency": FAST}))
    openai = llm_app or create_openai_app(OpenAIConfig.model_validate({"script": SCRIPT, "latency": FAST}))
    async with serving(deepgram) as stt, serving(elevenlabs) as tts, serving(openai) as llm:
        recordings = RecordingBox()
        workflow = LoggingWorkflowClient()
        tools = StaticToolRunner({"book_appointment": {"booked": True, "day": "tuesday"}})
        app = create_app(
            runtime_config(stt, tts, llm, tts_kind=tts_kind, **overrides),
            recording_sink=recordings,
            workflow_client=workflow,
            tool_runner=tools,
        )
        async with serving(app) as url, aiohttp.ClientSession() as http:
            yield Stack(url, app, http, recordings, workflow, tools)


def refusing(
    path: str, method: str, body: dict[str, Any], requested: asyncio.Event | None = None
) -> web.Application:
    """A stand-in provider that answers every request with HTTP 429 (a rate limit)."""

    async def handler(request: web.Request) -> web.Response:
        if requested is not None:
            requested.set()
        return web.json_response(body, status=429, headers={"retry-after": "1"})

    app = web.Application()
    app.router.add_route(method, path, handler)
    return app


def errors_reported(stack_app: web.Application) -> asyncio.Event:
    """An event set when a provider reports an error to the runtime's metrics (wraps the observer method)."""
    metrics = stack_app[RUNTIME].metrics
    reported = asyncio.Event()
    count_error = metrics.count_error

    def counted(service: Any, provider: str, reason: str) -> None:
        count_error(service, provider, reason)
        reported.set()

    metrics.count_error = counted  # type: ignore[method-assign]
    return reported


# --- the Twilio side ----------------------------------------------------------------------------------------


@dataclass
class Heard:
    """What arrived between two points of a call: one decoded text per mark (sentence), and control events."""

    texts: list[str] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    cleared: bool = False
    media_sizes: list[int] = field(default_factory=list)


def decode(audio: bytes) -> list[str]:
    samples = from_bytes(audio, TWILIO_MULAW_8K)
    return [e.text for e in decode_phrases(samples, 8000) if isinstance(e, DecodedPhrase)]


async def webhook(stack: Stack, caller: str = "+15550001111", sid: str = "CA" + "1" * 32) -> str:
    form = {
        "CallSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": caller,
        "To": "+15559990000",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    async with stack.http.post(f"{stack.url}/voice", data=form) as response:
        assert response.status == 200
        assert response.content_type == "text/xml"
        return await response.text()


class TwilioSide:
    """Just enough of Twilio's side of a ``<Connect><Stream>`` (protocol sections 2 and 4) for a test."""

    def __init__(self, ws: ClientConnection, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.sequence = 0
        self.chunk = 0
        self.sent_audio = 0

    @classmethod
    async def dial(cls, stack: Stack, *, n: int = 1) -> TwilioSide:
        call_sid = f"CA{n:032x}"
        root = ET.fromstring(await webhook(stack, sid=call_sid))
        stream = root.find("./Connect/Stream")
        assert stream is not None, ET.tostring(root)
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert parameters == {"caller": "+15550001111"}
        ws = await connect(stream.get("url"), compression=None)
        side = cls(ws, f"MZ{n:032x}")
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await side._send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": side.stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
        return side

    async def _send(self, event: str, **body: Any) -> None:
        self.sequence += 1
        await self.ws.send(
            json.dumps(
                {"event": event, "sequenceNumber": str(self.sequence), "streamSid": self.stream_sid, **body}
            )
        )

    async def say(self, text: str, *, silence_s: float = 0.4) -> None:
        """The caller speaks ``text`` (phrase audio) then keeps quiet, in 20 ms μ-law frames."""
        audio = np.concatenate([encode_phrase(text, 8000), np.zeros(int(silence_s * 8000), dtype=np.float32)])
        await self.send_audio(to_bytes(audio, TWILIO_MULAW_8K))

    async def send_audio(self, wire: bytes) -> None:
        for i in range(0, len(wire), FRAME):
            self.chunk += 1
            payload = base64.b64encode(wire[i : i + FRAME]).decode()
            media = {
                "track": "inbound",
                "chunk": str(self.chunk),
                "timestamp": str(20 * self.chunk),
                "payload": payload,
            }
            await self._send("media", media=media)
            self.sent_audio += len(wire[i : i + FRAME])

    async def dtmf(self, digit: str) -> None:
        await self._send("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    async def echo(self, name: str) -> None:
        await self._send("mark", mark={"name": name})

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            message = json.loads(await self.ws.recv())
        assert message.get("streamSid") == self.stream_sid, message
        return message

    async def listen(self, sentences: int, *, echo: bool = True) -> Heard:
        """Collect agent audio until ``sentences`` marks arrived; decode each mark's audio; echo the marks
        (as Twilio does once playout reaches them)."""
        heard, audio = Heard(), b""
        while len(heard.marks) < sentences:
            message = await self.receive()
            if message["event"] == "media":
                chunk = base64.b64decode(message["media"]["payload"])
                heard.media_sizes.append(len(chunk))
                audio += chunk
            elif message["event"] == "mark":
                heard.marks.append(message["mark"]["name"])
                heard.texts.extend(decode(audio))
                audio = b""
                if echo:
                    await self.echo(message["mark"]["name"])
            elif message["event"] == "clear":
                heard.cleared = True
        return heard

    async def until_clear(self) -> Heard:
        """Read until the runtime sends ``clear``; then echo every mark it sent (as Twilio does on clear)."""
        heard = Heard()
        while True:
            message = await self.receive()
            if message["event"] == "mark":
                heard.marks.append(message["mark"]["name"])
            elif message["event"] == "media":
                heard.media_sizes.append(len(base64.b64decode(message["media"]["payload"])))
            elif message["event"] == "clear":
                heard.cleared = True
                for name in heard.marks:
                    await self.echo(name)
                return heard

    async def first_media(self) -> None:
        while (await self.receive())["event"] != "media":
            pass

    async def hung_up_by_server(self) -> tuple[int | None, str | None]:
        """Drain until the server closes the socket; returns its close code and reason."""
        async with asyncio.timeout(STEP_TIMEOUT_S):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed:
                pass
        return self.ws.close_code, self.ws.close_reason

    async def hang_up(self) -> tuple[int | None, str | None]:
        """The caller hangs up: Twilio sends ``stop``; the server then closes the socket. Reading on until it
        does matters: a client that stops reading stalls the closing handshake behind unread audio."""
        await self._send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": "CA"})
        return await self.hung_up_by_server()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition text (``labels`` must match exactly)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{name}{labels} not in metrics")


# --- the tests ----------------------------------------------------------------------------------------------


async def test_a_whole_call_greeting_turns_tool_goodbye_and_hang_up() -> None:
    async with stack() as s:
        caller = await TwilioSide.dial(s)

        greeting = await caller.listen(sentences=2)
        assert greeting.texts == ["Hello, this is the clinic.", "How can I help?"]
        assert max(greeting.media_sizes) <= 320  # 40 ms frames, sent as the TTS audio arrives

        await caller.say("I would like an appointment.")
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]

        await caller.dtmf("5")
        await caller.say("Tuesday please.")
        confirm = await caller.listen(sentences=3)
        assert confirm.texts == [
            "Tuesday at ten in the morning.",
            "The doctor will see you then.",
            "Shall I book it?",
        ]
        assert len(set(confirm.marks)) == 3 and not confirm.cleared

        await caller.say("Yes, book it.")
        final = await caller.listen(sentences=2)
        assert final.texts == ["You are booked for Tuesday at ten.", GOODBYE]
        # the runtime hangs up once the goodbye's mark was echoed
        assert await caller.hung_up_by_server() == (1000, "call completed")

        recording = await s.recordings.next()
        await s.idle()
        assert s.app[RUNTIME].calls == {}  # the call object (and its buffers) is gone with the call

    assert recording.outcome == "completed"
    assert recording.call_sid == "CA" + "0" * 31 + "1"
    assert len(recording.caller_audio) == caller.sent_audio
    assert decode(recording.agent_audio)[:2] == ["Hello, this is the clinic.", "How can I help?"]
    assert ("dtmf", "5") in recording.log
    # the tool ran with the LLM's arguments, and the booking event went to the workflow seam
    assert [(c.name, c.parsed_arguments()) for c in s.tools.calls] == [
        ("book_appointment", {"day": "tuesday"})
    ]
    assert [(e.name, ctx.caller) for e, ctx in s.workflow.events] == [("appointment_booked", "+15550001111")]


async def test_caller_audio_resampled_to_16k_for_stt_is_understood() -> None:
    # the default sends linear16 at 8 kHz; a 16 kHz STT goes through the streaming resampler (soxr)
    async with stack(stt_audio={"encoding": "linear16", "sample_rate": 16000}) as s:
        caller = await TwilioSide.dial(s)
        await caller.listen(sentences=2)
        await caller.say("I would like an appointment.")
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]
        await caller.hang_up()
        await s.idle()


async def test_barge_in_clears_queued_audio_and_the_caller_is_answered() -> None:
    async with stack() as s:
        caller = await TwilioSide.dial(s)

        # The caller talks over the greeting (its marks are never echoed: it is still queued at Twilio).
        await caller.first_media()
        await caller.say("I would like an appointment.")
        assert (await caller.until_clear()).cleared
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]

        # And over a reply: three sentences are queued, the caller interrupts after the first audio arrives.
        await caller.say("Tuesday please.")
        await caller.first_media()
        await caller.say("Actually, Wednesday.")
        assert (await caller.until_clear()).cleared
        assert (await caller.listen(sentences=1)).texts[:1] == ["Wednesday it is."]

        text = await s.metrics()
        assert metric(text, "runtime_barge_ins_total") == 2.0
        await caller.hang_up()
        await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    assert metric(text, "runtime_calls_total", outcome="caller_hangup") == 1.0
    assert metric(text, "runtime_active_calls") == 0.0


async def test_capacity_rejects_the_second_call_and_health_shows_the_active_one() -> None:
    async with stack(capacity=1) as s:
        first = await TwilioSide.dial(s, n=1)
        await first.listen(sentences=2)

        # The webhook answers a clear rejection...
        twiml = await webhook(s, sid="CA" + "2" * 32)
        assert ET.fromstring(twiml).find("./Reject").get("reason") == "busy"
        # ...and a stream that connects anyway is closed with 1013 "at capacity".
        async with connect(s.url.replace("http", "ws") + "/media") as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1013, "at capacity")

        async with s.http.get(f"{s.url}/healthz") as response:
            assert response.status == 200
            health = await response.json()
        assert (health["active_calls"], health["capacity"], health["accepting"]) == (1, 1, False)
        async with s.http.get(f"{s.url}/readyz") as response:
            assert response.status == 503
        text = await s.metrics()
        assert metric(text, "runtime_active_calls") == 1.0
        assert metric(text, "runtime_capacity") == 1.0
        assert metric(text, "runtime_calls_total", outcome="rejected_busy") == 1.0
        assert metric(text, "runtime_calls_total", outcome="refused_at_capacity") == 1.0
        assert metric(text, "runtime_process_resident_memory_bytes") > 10_000_000
        assert metric(text, "runtime_tts_first_byte_seconds_count", provider="elevenlabs") >= 1.0

        await first.hang_up()
        await s.recordings.next()
        await s.idle()
        async with s.http.get(f"{s.url}/readyz") as response:
            assert response.status == 200
        text = await s.metrics()
    assert metric(text, "runtime_active_calls") == 0.0
    assert metric(text, "runtime_calls_total", outcome="caller_hangup") == 1.0


async def test_provider_latency_histograms_are_filled_by_a_turn() -> None:
    async with stack() as s:
        caller = await TwilioSide.dial(s)
        await caller.listen(sentences=2)
        await caller.say("I would like an appointment.")
        await caller.listen(sentences=1)
        text = await s.metrics()
        await caller.hang_up()
        await s.idle()
    assert metric(text, "runtime_stt_final_latency_seconds_count", provider="deepgram") >= 1.0
    assert metric(text, "runtime_llm_first_token_seconds_count", provider="openai") == 1.0
    assert metric(text, "runtime_tts_first_byte_seconds_count", provider="elevenlabs") == 3.0
    assert metric(text, "runtime_turns_total") == 1.0


@pytest.mark.parametrize(
    ("tts_kind", "encoding", "rate"),
    [("elevenlabs", "linear16", 16000), ("deepgram", "mulaw", 8000), ("deepgram", "linear16", 24000)],
)
async def test_tts_kinds_and_formats_reach_the_caller_as_mulaw_8k(
    tts_kind: str, encoding: str, rate: int
) -> None:
    # Whatever TTS speaks, Twilio gets the telephony format (transcoded with soxr when they differ).
    async with stack(tts_kind=tts_kind, tts_audio={"encoding": encoding, "sample_rate": rate}) as s:
        caller = await TwilioSide.dial(s)
        greeting = await caller.listen(sentences=2)
        await caller.hang_up()
        await s.idle()
    assert greeting.texts == ["Hello, this is the clinic.", "How can I help?"]
    assert max(greeting.media_sizes) <= 320


async def test_stt_refused_at_the_handshake_ends_the_call_with_1011() -> None:
    # Deepgram's rate limit is on concurrent connections, refused at the websocket handshake (providers.md).
    body = {"err_code": "TOO_MANY_REQUESTS", "err_msg": "Too many requests. Please try again later"}
    async with stack(stt_app=refusing("/v1/listen", "GET", body)) as s:
        caller = await TwilioSide.dial(s)
        assert await caller.hung_up_by_server() == (1011, "speech-to-text unavailable")
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    assert recording.outcome == "stt_error"
    assert metric(text, "runtime_calls_total", outcome="stt_error") == 1.0
    assert (
        metric(text, "runtime_provider_errors_total", service="stt", provider="deepgram", reason="http_429")
        == 1.0
    )


async def test_llm_rate_limit_today_means_silence_but_the_call_goes_on() -> None:
    # No fallback provider yet (incident 4, the broken way): the turn is lost, the caller hears nothing.
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    requested = asyncio.Event()
    async with stack(llm_app=refusing("/v1/chat/completions", "POST", body, requested)) as s:
        reported = errors_reported(s.app)
        caller = await TwilioSide.dial(s)
        await caller.listen(sentences=2)
        await caller.say("I would like an appointment.")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await requested.wait()
            await reported.wait()
        await caller.dtmf("1")  # the call is still up
        await caller.say("Hello?")
        assert await caller.hang_up() == (1000, "call ended")
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    assert recording.outcome == "caller_hangup"
    assert ("dtmf", "1") in recording.log
    assert decode(recording.agent_audio) == ["Hello, this is the clinic.", "How can I help?"]  # nothing else
    assert (
        metric(text, "runtime_provider_errors_total", service="llm", provider="openai", reason="http_429")
        >= 1
    )
