"""The stream faults measured on real bytes over loopback (aiohttp and websockets clients): a late first byte,
a stall with no data then data again, a cut after N chunks, garbage in place of payloads. Margins are wide
(a fault of 600-800 ms is asserted at >= 450-600 ms): these run on a busy 2-core machine."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from fake_providers import (
    DeepgramConfig,
    ElevenLabsConfig,
    OpenAIConfig,
    create_deepgram_app,
    create_elevenlabs_app,
    create_openai_app,
    gate_of,
    serve_app,
)
from harness.audio.formats import AudioFormat, from_bytes, to_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, encode_phrase, normalize_text

FAST = {"ttfb": 0.0, "chunk_interval": 0.0}
MULAW_8K = AudioFormat("mulaw", 8000)
PCM_16K = AudioFormat("linear16", 16000)
TEXT = "Sure, I can book a cleaning for Tuesday at ten. Does that work for you?"
#: 100 ms of 8 kHz μ-law per chunk
CHUNK = 800
SPEAK_REST = "/v1/speak?encoding=mulaw&sample_rate=8000&container=none"
AUTH = {"Authorization": "Token dg-key"}


def texts(audio: bytes, fmt: AudioFormat) -> list[str]:
    return [e.text for e in decode_phrases(from_bytes(audio, fmt), fmt.sample_rate) if isinstance(e, DecodedPhrase)]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def openai_client() -> AsyncIterator[Callable[..., AsyncOpenAI]]:
    """Makes OpenAI clients for a base URL and closes them after the test (no pool left to the GC)."""
    made: list[AsyncOpenAI] = []

    def make(base_url: str, max_retries: int = 0) -> AsyncOpenAI:
        made.append(AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=max_retries))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def deepgram() -> AsyncIterator[tuple[str, Any]]:
    app = create_deepgram_app(DeepgramConfig.model_validate({"stt": FAST, "tts": FAST, "tts_chunk_ms": 100}))
    async with serve_app(app) as url:
        yield url, app


async def fault(base_url: str, body: dict[str, Any]) -> str:
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/_chaos/faults", json=body) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def timed_body(response: aiohttp.ClientResponse) -> list[tuple[float, bytes]]:
    """Every read of the body with the time it arrived."""
    return [(time.monotonic(), data) async for data in response.content.iter_any()]


# -- slow_first_byte -----------------------------------------------------------------------------------------


async def test_slow_first_byte_delays_the_http_stream(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "slow_first_byte", "delay_ms": 600, "route": "speak"})
    async with aiohttp.ClientSession(headers=AUTH) as session:
        started = time.monotonic()
        async with session.post(url + SPEAK_REST, json={"text": TEXT}) as response:
            headers_at = time.monotonic()
            first = await response.content.readany()
            first_at = time.monotonic()
            rest = await response.read()
    assert response.status == 200
    assert headers_at - started >= 0.55, "the headers go out with the first byte"
    assert first_at - started >= 0.55
    assert texts(first + rest, MULAW_8K) == [normalize_text(TEXT)], "the stream itself is intact"


async def test_slow_handshake_and_slow_first_frame_on_websockets(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    ws_url = "ws" + url.removeprefix("http") + "/v1/speak?encoding=mulaw&sample_rate=8000"
    handshake = await fault(url, {"kind": "slow_first_byte", "delay_ms": 500, "at": "handshake"})
    started = time.monotonic()
    async with websockets.connect(ws_url, additional_headers=AUTH) as ws:
        assert time.monotonic() - started >= 0.45, "the 101 came late"
        assert json.loads(await ws.recv())["type"] == "Metadata"
    async with aiohttp.ClientSession() as session:
        await session.delete(f"{url}/_chaos/faults/{handshake}")
    await fault(url, {"kind": "slow_first_byte", "delay_ms": 600, "route": "speak.ws"})
    async with websockets.connect(ws_url, additional_headers=AUTH) as ws:
        connected = time.monotonic()
        metadata = json.loads(await ws.recv())
        assert time.monotonic() - connected >= 0.55, "the first frame came late"
        assert metadata["type"] == "Metadata"


# -- stall ---------------------------------------------------------------------------------------------------


async def test_stall_on_an_http_stream_sends_nothing_then_resumes(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "stall", "after_chunks": 2, "stall_ms": 800})
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(url + SPEAK_REST, json={"text": TEXT}) as response:
            reads = await timed_body(response)
    gaps = [(b[0] - a[0], i) for i, (a, b) in enumerate(itertools.pairwise(reads))]
    longest, at = max(gaps)
    assert longest >= 0.6
    assert sum(len(d) for _, d in reads[: at + 1]) == 2 * CHUNK, "the stall began after exactly 2 chunks"
    body = b"".join(d for _, d in reads)
    assert len(body) > 4 * CHUNK and texts(body, MULAW_8K) == [normalize_text(TEXT)], "then all the rest came"


async def test_stall_on_a_websocket_then_the_frames_resume(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "stall", "after_chunks": 3, "stall_ms": 800, "route": "speak"})
    ws_url = "ws" + url.removeprefix("http") + "/v1/speak?encoding=mulaw&sample_rate=8000"
    frames: list[tuple[float, Any]] = []
    async with asyncio.timeout(20), websockets.connect(ws_url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        await ws.send(json.dumps({"type": "Flush"}))
        while True:
            message = await ws.recv()
            frames.append((time.monotonic(), message))
            if isinstance(message, str) and json.loads(message)["type"] == "Flushed":
                break
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    assert gaps[2] >= 0.6, "nothing between the 3rd and the 4th frame"
    assert max(gaps[:2] + gaps[3:]) < gaps[2]
    audio = b"".join(m for _, m in frames if isinstance(m, bytes))
    assert texts(audio, MULAW_8K) == [normalize_text(TEXT)]


async def test_a_stall_for_ever_ends_when_the_client_gives_up(openai_client: Callable[..., AsyncOpenAI]) -> None:
    app = create_openai_app(OpenAIConfig.model_validate({"latency": FAST}))
    async with serve_app(app) as url:
        await fault(url, {"kind": "stall", "after_chunks": 1, "route": "chat"})
        client = openai_client(url)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first = await anext(aiter(stream))
        assert first.choices[0].delta.role == "assistant"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.6):
                await anext(aiter(stream))
        assert gate_of(app).counters.active == 1, "the stalled stream is still open"
        await stream.close()  # the client gives up
        await until(lambda: gate_of(app).counters.active == 0)


# -- truncate ------------------------------------------------------------------------------------------------


async def test_truncate_cuts_an_http_body_after_n_chunks(deepgram: tuple[str, Any]) -> None:
    url, app = deepgram
    await fault(url, {"kind": "truncate", "after_chunks": 3, "route": "speak.rest"})
    received = b""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(url + SPEAK_REST, json={"text": TEXT}) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in response.content.iter_any():
                    received += data
    assert len(received) == 3 * CHUNK
    await until(lambda: gate_of(app).counters.active == 0)


@pytest.mark.parametrize("close_code", [None, 1011])
async def test_truncate_ends_a_websocket_after_n_frames(deepgram: tuple[str, Any], close_code: int | None) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "truncate", "after_chunks": 3, "route": "speak.ws", "close_code": close_code})
    ws_url = "ws" + url.removeprefix("http") + "/v1/speak?encoding=mulaw&sample_rate=8000"
    received: list[Any] = []
    async with asyncio.timeout(20), websockets.connect(ws_url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        await ws.send(json.dumps({"type": "Flush"}))
        with pytest.raises(websockets.ConnectionClosedError) as info:
            while True:
                received.append(await ws.recv())
    assert len(received) == 3 and isinstance(received[1], bytes)
    if close_code is None:
        assert info.value.rcvd is None, "dropped without a close frame: the client sees 1006"
    else:
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011


async def test_a_timed_truncate_drops_a_quiet_stt_socket(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "truncate", "after_ms": 400, "route": "listen"})
    ws_url = "ws" + url.removeprefix("http") + "/v1/listen?encoding=mulaw&sample_rate=8000"
    async with asyncio.timeout(8), websockets.connect(ws_url, additional_headers=AUTH) as ws:
        opened = time.monotonic()
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await ws.recv()
        lasted = time.monotonic() - opened
    assert info.value.rcvd is None
    assert 0.3 <= lasted < 5, "dropped at its time, long before the 10 s idle timeout"


async def test_a_timed_truncate_ends_a_stall_for_ever(deepgram: tuple[str, Any]) -> None:
    url, app = deepgram
    await fault(url, {"kind": "stall", "after_chunks": 2, "route": "speak.ws"})
    await fault(url, {"kind": "truncate", "after_ms": 700, "route": "speak.ws", "close_code": 1011})
    ws_url = "ws" + url.removeprefix("http") + "/v1/speak?encoding=mulaw&sample_rate=8000"
    received: list[Any] = []
    async with asyncio.timeout(8), websockets.connect(ws_url, additional_headers=AUTH) as ws:
        opened = time.monotonic()
        await ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        await ws.send(json.dumps({"type": "Flush"}))
        with pytest.raises(websockets.ConnectionClosedError) as info:
            while True:
                received.append(await ws.recv())
        lasted = time.monotonic() - opened
    assert len(received) == 2, "Metadata and one audio chunk, then the stall"
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert 0.6 <= lasted < 5
    await until(lambda: gate_of(app).counters.active == 0)


async def test_truncate_and_garbage_on_a_body_sent_in_one_piece() -> None:
    app = create_openai_app(OpenAIConfig.model_validate({"latency": FAST}))
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": "Bearer sk"}
    async with serve_app(app) as url, aiohttp.ClientSession(headers=headers) as session:
        cut = await fault(url, {"kind": "truncate", "after_chunks": 0})
        async with session.post(f"{url}/v1/chat/completions", json=request) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        await session.delete(f"{url}/_chaos/faults/{cut}")
        await fault(url, {"kind": "garbage"})
        async with session.post(f"{url}/v1/chat/completions", json=request) as response:
            assert response.status == 200 and response.content_type == "application/json"
            with pytest.raises(ValueError):
                json.loads(await response.read())


# -- garbage -------------------------------------------------------------------------------------------------


async def test_garbage_on_the_stt_websocket_is_not_json(deepgram: tuple[str, Any]) -> None:
    url, _ = deepgram
    await fault(url, {"kind": "garbage", "route": "listen"})
    ws_url = "ws" + url.removeprefix("http") + "/v1/listen?encoding=linear16&sample_rate=16000"
    silence = np.zeros(4000, np.float32)
    audio = to_bytes(np.concatenate([silence, encode_phrase(TEXT, 16000), silence]), PCM_16K)
    messages: list[Any] = []
    async with asyncio.timeout(20), websockets.connect(ws_url, additional_headers=AUTH) as ws:
        for i in range(0, len(audio), 640):
            await ws.send(audio[i : i + 640])
        await ws.send(json.dumps({"type": "CloseStream"}))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                messages.append(await ws.recv())
    assert len(messages) >= 2, "a final and the Metadata, garbled"
    for message in messages:
        assert isinstance(message, str)
        with pytest.raises(ValueError):
            json.loads(message)


async def test_garbage_audio_is_noise_of_the_same_length() -> None:
    app = create_elevenlabs_app(ElevenLabsConfig.model_validate({"latency": FAST}))
    path = "/v1/text-to-speech/voice/stream?output_format=ulaw_8000"
    async with serve_app(app) as url, aiohttp.ClientSession(headers={"xi-api-key": "k"}) as session:
        async with session.post(url + path, json={"text": TEXT}) as response:
            clean = await response.read()
        await fault(url, {"kind": "garbage", "route": "http.stream"})
        async with session.post(url + path, json={"text": TEXT}) as response:
            noisy = await response.read()
    assert texts(clean, MULAW_8K) == [normalize_text(TEXT)]
    assert len(noisy) == len(clean) and noisy != clean
    assert texts(noisy, MULAW_8K) == []


async def test_garbage_sse_breaks_the_openai_sdks_stream(openai_client: Callable[..., AsyncOpenAI]) -> None:
    app = create_openai_app(OpenAIConfig.model_validate({"latency": FAST}))
    async with serve_app(app) as url:
        await fault(url, {"kind": "garbage", "after_chunks": 1, "chunks": 1})
        client = openai_client(url)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received = []
        with pytest.raises(json.JSONDecodeError):
            async for chunk in stream:
                received.append(chunk)
    assert len(received) == 1 and received[0].choices[0].delta.role == "assistant"
