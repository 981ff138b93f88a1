"""The fake ElevenLabs: HTTP text-to-speech through the official ``elevenlabs`` SDK (2.x), the input-streaming
websockets through raw ``websockets`` (the SDK's realtime client forces ``wss://``), and the stream core with
literal messages and a manual clock."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError

from fake_providers import ElevenLabsConfig, create_elevenlabs_app, gate_of, serve_app
from fake_providers.audio import PhraseVoice
from fake_providers.elevenlabs_streams import InputStreamSession
from fake_providers.gate import Plan
from fake_providers.latency import Fixed, Latency
from fake_providers.outbox import Emit, Shut
from harness.audio.formats import AudioFormat, from_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, normalize_text

MULAW_8K = AudioFormat("mulaw", 8000)
PCM_16K = AudioFormat("linear16", 16000)
TEXT = "Sure, I can book a cleaning. Which day works for you?"
VOICE = "21m00Tcm4TlvDq8ikWAM"


def decoded_texts(audio: bytes, fmt: AudioFormat) -> list[str]:
    events = decode_phrases(from_bytes(audio, fmt), fmt.sample_rate)
    return [e.text for e in events if isinstance(e, DecodedPhrase)]


def fast(**overrides: Any) -> ElevenLabsConfig:
    return ElevenLabsConfig.model_validate({"latency": {"ttfb": 0.0, "chunk_interval": 0.0}, **overrides})


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_app(create_elevenlabs_app(fast())) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> AsyncElevenLabs:
    return AsyncElevenLabs(base_url=base_url, api_key="xi-test")


# -- HTTP, through the SDK -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("output_format", "fmt"), [("ulaw_8000", MULAW_8K), ("pcm_16000", PCM_16K)])
async def test_sdk_stream_decodes_to_the_text(
    client: AsyncElevenLabs, output_format: str, fmt: AudioFormat
) -> None:
    chunks = [
        chunk
        async for chunk in client.text_to_speech.stream(
            VOICE,
            text=TEXT,
            model_id="eleven_flash_v2_5",
            output_format=output_format,  # type: ignore[arg-type]
        )
    ]
    assert decoded_texts(b"".join(chunks), fmt) == [normalize_text(TEXT)]


async def test_sdk_convert_returns_the_same_audio(client: AsyncElevenLabs) -> None:
    whole = b"".join(
        [c async for c in client.text_to_speech.convert(VOICE, text=TEXT, output_format="ulaw_8000")]
    )
    streamed = b"".join(
        [c async for c in client.text_to_speech.stream(VOICE, text=TEXT, output_format="ulaw_8000")]
    )
    assert whole == streamed and decoded_texts(whole, MULAW_8K) == [normalize_text(TEXT)]


async def test_sdk_stream_with_timestamps(client: AsyncElevenLabs) -> None:
    chunks = [
        c
        async for c in client.text_to_speech.stream_with_timestamps(
            VOICE, text=TEXT, output_format="pcm_16000"
        )
    ]
    assert len(chunks) > 1
    audio = b"".join(base64.b64decode(c.audio_base_64) for c in chunks)
    assert decoded_texts(audio, PCM_16K) == [normalize_text(TEXT)]
    characters: list[str] = []
    starts: list[float] = []
    for c in chunks:
        if c.alignment is not None:
            assert c.normalized_alignment is not None
            characters += c.alignment.characters
            starts += c.alignment.character_start_times_seconds
            ends = c.alignment.character_end_times_seconds
            assert all(e > s for s, e in zip(c.alignment.character_start_times_seconds, ends, strict=True))
    assert "".join(characters) == TEXT
    assert starts == sorted(starts) and starts[0] == 0.0
    assert starts[-1] < len(audio) / PCM_16K.bytes_per_second


async def test_mp3_is_refused_with_an_elevenlabs_error(client: AsyncElevenLabs) -> None:
    with pytest.raises(ApiError) as info:
        async for _ in client.text_to_speech.stream(VOICE, text=TEXT, output_format="mp3_44100_128"):
            pass
    assert info.value.status_code == 400
    assert info.value.body["detail"]["status"] == "invalid_output_format"
    assert "ulaw_8000" in info.value.body["detail"]["message"]


async def test_missing_key_and_bad_body(base_url: str) -> None:
    url = f"{base_url}/v1/text-to-speech/{VOICE}/stream?output_format=ulaw_8000"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"text": TEXT}) as response:
            assert response.status == 401
            assert (await response.json())["detail"]["status"] == "needs_authorization"
        async with session.post(url, json={"model_id": "x"}, headers={"xi-api-key": "k"}) as response:
            assert response.status == 422
            assert (await response.json())["detail"][0]["loc"] == ["body", "text"]


async def test_time_to_first_byte_respects_the_configured_latency() -> None:
    app = create_elevenlabs_app(fast(latency={"ttfb": 0.3, "chunk_interval": 0.01}))
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with session.post(
            f"{url}/v1/text-to-speech/{VOICE}/stream?output_format=ulaw_8000",
            json={"text": TEXT},
            headers={"xi-api-key": "k"},
        ) as response:
            await response.content.readany()
            assert loop.time() - started >= 0.3
            await response.read()
    assert gate_of(app).counters.requests == 1


# -- the websockets, through raw websockets ----------------------------------------------------------------


def ws_url(base_url: str, path: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"model_id": "eleven_flash_v2_5", **query}.items())
    return f"ws{base_url.removeprefix('http')}/v1/text-to-speech/{VOICE}/{path}?{params}"


async def test_multi_stream_input_two_contexts(base_url: str) -> None:
    url = ws_url(base_url, "multi-stream-input", output_format="ulaw_8000")
    audio: dict[str, bytes] = {"a": b"", "b": b""}
    finals: list[str] = []
    async with asyncio.timeout(30), websockets.connect(url, additional_headers={"xi-api-key": "k"}) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "a", "voice_settings": {"stability": 0.5}}))
        await ws.send(json.dumps({"text": " ", "context_id": "b"}))
        await ws.send(json.dumps({"text": "Hello from the first context", "context_id": "a"}))
        await ws.send(json.dumps({"text": "", "context_id": "a"}))  # keep-alive: no reply
        await ws.send(json.dumps({"text": "The second one is speaking. ", "context_id": "b"}))
        await ws.send(json.dumps({"text": "And this part waits", "context_id": "b"}))
        await ws.send(json.dumps({"context_id": "a", "flush": True}))
        await ws.send(json.dumps({"context_id": "b", "close_context": True}))
        await ws.send(json.dumps({"context_id": "a", "close_context": True}))
        while len(finals) < 2:
            message = json.loads(await ws.recv())
            if message.get("isFinal"):
                finals.append(message["contextId"])
                continue
            audio[message["contextId"]] += base64.b64decode(message["audio"])
            assert message["alignment"] is None or len(message["alignment"]["chars"]) == len(
                message["alignment"]["charStartTimesMs"]
            )
        await ws.send(json.dumps({"close_socket": True}))
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
    assert sorted(finals) == ["a", "b"]
    assert decoded_texts(audio["a"], MULAW_8K) == ["Hello from the first context"]
    # b's finished sentence was generated; the unfinished rest was dropped by close_context
    assert decoded_texts(audio["b"], MULAW_8K) == ["The second one is speaking."]


async def test_stream_input_single_context(base_url: str) -> None:
    url = ws_url(base_url, "stream-input", output_format="pcm_16000")
    audio = b""
    async with asyncio.timeout(30), websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": " ", "xi_api_key": "k", "generation_config": {}}))
        for piece in ["Hi there. ", "How are ", "you today?"]:
            await ws.send(json.dumps({"text": piece}))
        await ws.send(json.dumps({"text": ""}))
        while not (message := json.loads(await ws.recv())).get("isFinal"):
            audio += base64.b64decode(message["audio"])
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
    assert decoded_texts(audio, PCM_16K) == ["Hi there.", "How are you today?"]


async def test_websocket_without_key_is_closed_with_policy_violation(base_url: str) -> None:
    url = ws_url(base_url, "multi-stream-input", output_format="ulaw_8000")
    async with asyncio.timeout(10), websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "a"}))
        error = json.loads(await ws.recv())
        assert error["code"] == 1008
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


# -- the stream core, no sockets ---------------------------------------------------------------------------


def test_generation_is_sequential_and_paced() -> None:
    latency = Latency(ttfb=Fixed(value=0.1), chunk_interval=Fixed(value=0.04))
    session = InputStreamSession(
        multi=True,
        fmt=MULAW_8K,
        voice=PhraseVoice(),
        plan=Plan(latency, random.Random(0)),
        chunk_ms=200,
        auto_mode=False,
        authorized=True,
        inactivity_timeout_s=20.0,
        now=0.0,
    )
    first = session.receive_text(json.dumps({"text": "One two three. ", "context_id": "x"}), 1.0)
    second = session.receive_text(
        json.dumps({"text": "Four five six.", "context_id": "y", "flush": True}), 1.0
    )
    dues = [a.due for a in first + second if isinstance(a, Emit)]
    assert dues[0] == pytest.approx(1.1)
    # y's phrase starts after x's last chunk (one socket, generated in turn), each chunk 40 ms after the last
    assert [round(b - a, 6) for a, b in itertools.pairwise(dues)] == pytest.approx(
        [0.04] * (len(first) - 1) + [0.1] + [0.04] * (len(second) - 1)
    )
    chunk_bytes = [base64.b64decode(a.frame["audio"]) for a in first if isinstance(a, Emit)]  # type: ignore[index]
    assert all(len(b) <= 1600 for b in chunk_bytes) and len(chunk_bytes) > 1
    closing = session.receive_text(json.dumps({"close_socket": True}), 1.2)
    assert [a.frame for a in closing if isinstance(a, Emit)] == [
        {"contextId": "x", "isFinal": True},
        {"contextId": "y", "isFinal": True},
    ]
    assert isinstance(closing[-1], Shut) and closing[-1].due >= dues[-1] and closing[-1].code == 1000
    assert np.all(np.diff([a.due for a in closing]) >= 0)
