"""The fake AssemblyAI Universal-Streaming server (``/v3/ws``), driven over a raw websocket as its documented
protocol says (the ``assemblyai`` SDK only speaks ``wss://``), and the runtime's AssemblyAI client against it.
The transcript is what the phrase codec hears, as with the fake Deepgram."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fake_providers import AssemblyAIConfig, create_assemblyai_app, serve_app
from fake_providers.latency import Fixed, Latency
from harness.audio.formats import TWILIO_MULAW_8K, AudioFormat, to_bytes
from harness.audio.phrase_codec import encode_phrase
from harness.clock import MonotonicClock
from reference_runtime.config import AssemblyAISttConfig
from reference_runtime.providers.assemblyai_stt import AssemblyAISpeechToText, parse_streaming_message
from reference_runtime.providers.base import NullObserver, ProviderError, Transcript

FAST = Latency(ttfb=Fixed(value=0.01), chunk_interval=Fixed(value=0.0))
PCM_16K = AudioFormat("linear16", 16000)
STEP_S = 20.0
PHRASE = "I would like an appointment."


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = create_assemblyai_app(AssemblyAIConfig.model_validate({"stt": FAST}))
    async with serve_app(app) as url:
        yield url


def phrase_audio(fmt: AudioFormat, text: str = PHRASE, silence_s: float = 0.6) -> bytes:
    samples = np.concatenate(
        [encode_phrase(text, fmt.sample_rate), np.zeros(int(silence_s * fmt.sample_rate), dtype=np.float32)]
    )
    return to_bytes(samples, fmt)


def ws_url(base_url: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{base_url.replace('http://', 'ws://')}/v3/ws?{params}"


async def send_chunks(ws: ClientConnection, audio: bytes, fmt: AudioFormat, chunk_ms: int = 100) -> None:
    step = fmt.bytes_per_second * chunk_ms // 1000
    for i in range(0, len(audio) - step + 1, step):
        await ws.send(audio[i : i + step])


async def messages_until(ws: ClientConnection, done: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(STEP_S):
        while True:
            message = json.loads(await ws.recv())
            seen.append(message)
            if done(message):
                return seen


async def test_begin_partials_end_of_turn_formatted_then_termination(base_url: str) -> None:
    url = ws_url(base_url, sample_rate="16000", encoding="pcm_s16le", format_turns="true")
    async with connect(url, additional_headers={"Authorization": "test-key"}) as ws:
        begin = json.loads(await ws.recv())
        assert begin["type"] == "Begin" and begin["id"] and begin["expires_at"] > 0
        await send_chunks(ws, phrase_audio(PCM_16K), PCM_16K)
        turns = await messages_until(ws, lambda m: m.get("turn_is_formatted"))
        await ws.send(json.dumps({"type": "Terminate"}))
        ending = await messages_until(ws, lambda m: m["type"] == "Termination")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(STEP_S):
                await ws.recv()
        assert ws.close_code == 1000
    partials = [t for t in turns if not t["end_of_turn"]]
    assert partials and all(t["type"] == "Turn" and t["turn_order"] == 0 for t in turns)
    assert partials[-1]["transcript"] and PHRASE.lower().startswith(partials[-1]["transcript"].split()[0])
    plain, formatted = turns[-2], turns[-1]
    assert (plain["end_of_turn"], plain["turn_is_formatted"]) == (True, False)
    assert plain["transcript"] == "i would like an appointment"
    assert formatted["transcript"] == PHRASE and formatted["end_of_turn"]
    assert formatted["words"][0]["start"] < formatted["words"][-1]["end"]  # ms
    assert ending[-1]["audio_duration_seconds"] >= 1


async def test_mulaw_is_understood_and_a_wrong_declaration_yields_no_turn(base_url: str) -> None:
    audio = phrase_audio(TWILIO_MULAW_8K)
    url = ws_url(base_url, sample_rate="8000", encoding="pcm_mulaw")
    async with connect(url, additional_headers={"Authorization": "k"}) as ws:
        await ws.recv()
        await send_chunks(ws, audio, TWILIO_MULAW_8K)
        turns = await messages_until(ws, lambda m: m.get("end_of_turn"))
    assert turns[-1]["transcript"] == "i would like an appointment"

    # μ-law bytes declared as PCM 16 kHz (incident 2): noise to the model, so no words and no turn
    url = ws_url(base_url, sample_rate="16000", encoding="pcm_s16le")
    async with connect(url, additional_headers={"Authorization": "k"}) as ws:
        await ws.recv()
        await send_chunks(ws, audio, PCM_16K)
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        await ws.send(json.dumps({"type": "Terminate"}))
        seen = await messages_until(ws, lambda m: m["type"] == "Termination")
    assert [m for m in seen if m["type"] == "Turn" and m["transcript"]] == []


async def test_protocol_errors_are_in_band_with_the_close_code(base_url: str) -> None:
    async def refused(url: str, headers: dict[str, str], send: bytes | str | None = None) -> tuple[dict, int | None]:
        async with connect(url, additional_headers=headers) as ws:
            first = json.loads(await ws.recv())
            if first["type"] == "Begin":
                assert send is not None
                await ws.send(send)
                first = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(STEP_S):
                    await ws.recv()
            return first, ws.close_code

    url = ws_url(base_url, sample_rate="8000", encoding="pcm_mulaw")
    error, code = await refused(url, {})
    assert (error["type"], error["error_code"], code) == ("Error", 1008, 1008)
    assert "Authorization" in error["error"]
    error, code = await refused(url, {"Authorization": "k"}, b"\xff" * 160)  # 20 ms: under the 50 ms minimum
    assert (error["error_code"], code) == (3007, 3007) and "Input duration" in error["error"]
    error, code = await refused(url, {"Authorization": "k"}, json.dumps({"type": "Shout"}))
    assert (error["error_code"], code) == (3006, 3006)
    error, code = await refused(ws_url(base_url, encoding="pcm_mulaw"), {"Authorization": "k"})
    assert error["error_code"] == 3006 and "sample_rate" in error["error"]


async def test_faults_refuse_the_handshake_and_are_counted(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/_chaos/faults", json={"kind": "rate_limit", "route": "stream"}) as r:
            assert r.status == 201
        with pytest.raises(InvalidStatus) as caught:
            async with connect(ws_url(base_url, sample_rate="8000"), additional_headers={"Authorization": "k"}):
                pass
        assert caught.value.response.status_code == 429
        async with http.get(f"{base_url}/_chaos/stats") as r:
            stats = await r.json()
    assert stats["provider"] == "assemblyai" and stats["refused"]["by_status"] == {"429": 1}


def test_parse_maps_turns_onto_transcripts() -> None:
    partial = {
        "type": "Turn",
        "end_of_turn": False,
        "transcript": "i would",
        "words": [{"start": 100, "end": 300, "text": "i"}, {"start": 300, "end": 500, "text": "would"}],
    }
    assert parse_streaming_message(json.dumps(partial), format_turns=True) == Transcript(
        "i would", is_final=False, speech_final=False, start=0.1, duration=0.4
    )
    plain = {**partial, "end_of_turn": True, "turn_is_formatted": False}
    assert parse_streaming_message(json.dumps(plain), format_turns=True) is None  # the formatted one follows
    final = parse_streaming_message(json.dumps(plain), format_turns=False)
    assert isinstance(final, Transcript) and final.is_final and final.speech_final


async def test_the_runtime_client_transcribes_twilio_frames(base_url: str) -> None:
    config = AssemblyAISttConfig(kind="assemblyai", base_url=base_url)
    async with aiohttp.ClientSession() as session:
        stt = AssemblyAISpeechToText(config, session, clock=MonotonicClock(), observer=NullObserver())
        stream = await stt.open_stream(TWILIO_MULAW_8K, call_id="call-1")
        audio = phrase_audio(TWILIO_MULAW_8K)
        for i in range(0, len(audio), 160):  # Twilio's 20 ms frames: the client batches them to 100 ms
            await stream.send_audio(audio[i : i + 160])
        finals: list[Transcript] = []
        async with asyncio.timeout(STEP_S):
            async for event in stream.events():
                if isinstance(event, Transcript) and event.is_final:
                    finals.append(event)
                    break
        await stream.close()

        refused = AssemblyAISpeechToText(
            config.model_copy(update={"api_key": ""}), session, clock=MonotonicClock(), observer=NullObserver()
        )
        with pytest.raises(ProviderError, match="1008"):
            await refused.open_stream(TWILIO_MULAW_8K, call_id="call-2")
    assert [f.text for f in finals] == [PHRASE]


async def test_the_cli_serves_the_fallback_fakes_by_name() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fake_providers",
        "serve",
        "--port",
        "0",
        "--provider",
        "anthropic",
        "--provider",
        "assemblyai",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        urls: dict[str, str] = {}
        async with asyncio.timeout(STEP_S):
            while len(urls) < 2:
                line = json.loads(await process.stdout.readline())
                urls[line["name"]] = line["url"]
        async with aiohttp.ClientSession() as http:
            for name in ("anthropic", "assemblyai"):
                async with http.get(f"{urls[name]}/_chaos/routes") as r:
                    assert (await r.json())["provider"] == name
        async with connect(
            ws_url(urls["assemblyai"], sample_rate="8000"), additional_headers={"Authorization": "k"}
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "Begin"
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STEP_S):
            assert await process.wait() == 0
