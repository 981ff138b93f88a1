"""Today's plain implementations behind the seams the safeguards issue will replace: recording sinks, the
workflow client, the tool runner, the audio plan, and the Deepgram stream's keep-alive and close."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import WSMsgType, web

from fake_providers.serve import serve_app
from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat, to_bytes
from harness.clock import ManualClock
from reference_runtime.audio_plan import AudioPlan, plan_from_config
from reference_runtime.config import DeepgramSttConfig, parse_config
from reference_runtime.dialog import ToolCall, WorkflowEvent
from reference_runtime.media_stream import StreamStarted
from reference_runtime.providers.base import NullObserver
from reference_runtime.providers.deepgram_stt import DeepgramSpeechToText
from reference_runtime.recording import FolderRecordingSink, MemoryRecordingSink, Recording
from reference_runtime.tools import HttpToolRunner, StaticToolRunner
from reference_runtime.workflow import CallContext, HttpWorkflowClient, WorkflowError

CONTEXT = CallContext(call_sid="CA1", stream_sid="MZ1", caller="+15550001111")


serving = serve_app  # the fakes' own loopback server helper


def recording(call_sid: str = "CA1") -> Recording:
    tone = (0.3 * np.sin(np.arange(800) * 0.2)).astype(np.float32)
    return Recording(
        call_sid=call_sid,
        stream_sid="MZ1",
        audio_format=TWILIO_MULAW_8K,
        caller_audio=to_bytes(tone, TWILIO_MULAW_8K),
        agent_audio=to_bytes(tone[:400], TWILIO_MULAW_8K),
        started_at=1.0,
        ended_at=2.5,
        outcome="completed",
        log=[("agent", "Hello."), ("caller", "Hi.")],
    )


async def test_folder_sink_writes_two_tracks_and_the_log(tmp_path: Path) -> None:
    await FolderRecordingSink(tmp_path / "rec").store(recording())
    with wave.open(str(tmp_path / "rec" / "CA1.caller.wav")) as caller:
        assert (caller.getframerate(), caller.getsampwidth(), caller.getnframes()) == (8000, 2, 800)
    with wave.open(str(tmp_path / "rec" / "CA1.agent.wav")) as agent:
        assert agent.getnframes() == 400
    meta = json.loads((tmp_path / "rec" / "CA1.json").read_text(encoding="utf-8"))
    assert meta["outcome"] == "completed" and meta["audio_format"] == "mulaw@8000"
    assert meta["log"] == [{"kind": "agent", "text": "Hello."}, {"kind": "caller", "text": "Hi."}]


async def test_memory_sink_is_bounded() -> None:
    sink = MemoryRecordingSink(keep_last=2)
    for i in range(5):
        await sink.store(recording(f"CA{i}"))
    assert [r.call_sid for r in sink.recordings] == ["CA3", "CA4"] and sink.stored == 5


async def test_http_workflow_client_posts_the_event_and_raises_on_failure() -> None:
    received: list[dict] = []
    status = 204

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/events", hook)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        client = HttpWorkflowClient(f"{url}/events", session, timeout_s=5)
        event = WorkflowEvent("appointment_booked", "book", {"caller_said": "yes"})
        await client.emit(event, CONTEXT)
        assert received == [
            {
                "event": "appointment_booked",
                "objective": "book",
                "data": {"caller_said": "yes"},
                "call_sid": "CA1",
                "stream_sid": "MZ1",
                "caller": "+15550001111",
            }
        ]
        status = 503
        try:
            await client.emit(event, CONTEXT)
        except WorkflowError as error:
            assert "503" in str(error)
        else:
            raise AssertionError("a 503 must raise WorkflowError")


async def test_tool_runners_always_return_json() -> None:
    call = ToolCall("call_1", "check_availability", '{"day": "tue"}')
    static = StaticToolRunner({"check_availability": {"slots": ["10:00"]}})
    assert json.loads((await static.run(call, CONTEXT)).content) == {"slots": ["10:00"]}
    assert json.loads((await static.run(ToolCall("c", "other", ""), CONTEXT)).content) == {"ok": True}

    async def crm(request: web.Request) -> web.Response:
        body = await request.json()
        if body["tool"] == "broken":
            return web.Response(status=500, text="boom")
        return web.json_response({"echo": body})

    app = web.Application()
    app.router.add_post("/tools", crm)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        runner = HttpToolRunner(f"{url}/tools", session, timeout_s=5)
        result = json.loads((await runner.run(call, CONTEXT)).content)
        assert result == {
            "echo": {"tool": "check_availability", "arguments": {"day": "tue"}, "call_sid": "CA1"}
        }
        broken = json.loads((await runner.run(ToolCall("c", "broken", "{}"), CONTEXT)).content)
        assert broken["error"] == "HTTP 500"
        gone = HttpToolRunner("http://127.0.0.1:9/tools", session, timeout_s=5)
        assert "error" in json.loads((await gone.run(call, CONTEXT)).content)


def test_audio_plan_comes_from_config() -> None:
    providers = {
        "stt": {"kind": "deepgram", "base_url": "http://x"},
        "llm": {"kind": "openai", "base_url": "http://x"},
        "tts": {"kind": "elevenlabs", "base_url": "http://x"},
    }
    start = StreamStarted("MZ1", "CA1", "AC1", ("inbound",), {}, "audio/x-mulaw", 8000, 1)
    assert plan_from_config(parse_config({"providers": providers}), start) == AudioPlan(
        TWILIO_MULAW_8K, AudioFormat("linear16", 8000), TWILIO_MULAW_8K
    )
    broken = parse_config(
        {"providers": providers, "telephony_audio": {"encoding": "linear16", "sample_rate": 16000}}
    )
    assert plan_from_config(broken, start).telephony == PCM_16K  # the hard-coded-PCM platform of incident 2


async def test_deepgram_stream_headers_keepalive_close_stream_and_no_empty_frames() -> None:
    seen: dict[str, object] = {"frames": [], "texts": []}
    keepalive = asyncio.Event()

    async def listen(request: web.Request) -> web.WebSocketResponse:
        seen["auth"] = request.headers.get("Authorization")
        seen["query"] = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                seen["frames"].append(message.data)  # type: ignore[union-attr]
            elif message.type == WSMsgType.TEXT:
                kind = json.loads(message.data)["type"]
                seen["texts"].append(kind)  # type: ignore[union-attr]
                if kind == "KeepAlive":
                    keepalive.set()
                if kind == "CloseStream":
                    await ws.send_str(json.dumps({"type": "Metadata", "request_id": "r"}))
                    await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/listen", listen)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        config = DeepgramSttConfig(base_url=url, api_key="secret", endpointing_ms=250, keepalive_s=0.05)
        stt = DeepgramSpeechToText(config, session, clock=ManualClock(), observer=NullObserver())
        stream = await stt.open_stream(PCM_16K, call_id="c1")
        events = [e async for e in _until_closed(stream, keepalive)]
    assert seen["auth"] == "Token secret"
    assert seen["query"]["encoding"] == "linear16" and seen["query"]["sample_rate"] == "16000"
    assert seen["query"]["endpointing"] == "250" and seen["query"]["interim_results"] == "true"
    assert seen["frames"] == [b"\x01\x02" * 160]
    assert seen["texts"][0] == "KeepAlive" and seen["texts"][-1] == "CloseStream"
    assert events == []  # Metadata is not an event for the call


async def _until_closed(stream, keepalive: asyncio.Event):  # type: ignore[no-untyped-def]
    reader_events: list = []

    async def read() -> None:
        async for event in stream.events():
            reader_events.append(event)

    reader = asyncio.create_task(read())
    async with asyncio.timeout(10):
        await keepalive.wait()  # sent by the stream after keepalive_s without audio
        await stream.send_audio(b"")  # never sent: an empty frame would end a Deepgram stream
        await stream.send_audio(b"\x01\x02" * 160)
        await stream.close()
        await reader
    for event in reader_events:
        yield event
