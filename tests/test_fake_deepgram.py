"""The fake Deepgram: the listen and speak cores with literal messages and a manual clock, then the server
driven by the official ``deepgram-sdk`` (7.x) over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1.types import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.speak.v1.types import SpeakV1Cleared, SpeakV1Flushed, SpeakV1Metadata, SpeakV1Text
from pydantic import ValidationError

from fake_providers import DeepgramConfig, create_deepgram_app, gate_of, serve_app
from fake_providers.audio import PhraseVoice
from fake_providers.deepgram_listen import ListenOptions, ListenSession
from fake_providers.deepgram_speak import SpeakOptions, SpeakSession
from fake_providers.gate import Plan
from fake_providers.latency import Fixed, Latency
from fake_providers.outbox import Action, Discard, Emit, Shut
from harness.audio.formats import AudioFormat, from_bytes, to_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, encode_phrase, normalize_text

PCM_16K = AudioFormat("linear16", 16000)
MULAW_8K = AudioFormat("mulaw", 8000)
TEXT = "Hi, I'd like to book a cleaning for Tuesday."
OTHER = "Yes please, ten o'clock is fine."


def phrase_audio(text: str, fmt: AudioFormat, *, lead_s: float = 0.2, tail_s: float = 0.3) -> bytes:
    rate = fmt.sample_rate
    lead, tail = np.zeros(int(lead_s * rate), np.float32), np.zeros(int(tail_s * rate), np.float32)
    return to_bytes(np.concatenate([lead, encode_phrase(text, rate), tail]), fmt)


def frames(data: bytes, fmt: AudioFormat, ms: int = 20) -> list[bytes]:
    step = fmt.sample_rate * ms // 1000 * fmt.bytes_per_sample
    return [data[i : i + step] for i in range(0, len(data), step)]


def decoded_texts(audio: bytes, fmt: AudioFormat) -> list[str]:
    return [
        e.text
        for e in decode_phrases(from_bytes(audio, fmt), fmt.sample_rate)
        if isinstance(e, DecodedPhrase)
    ]


# -- the listen core: literal audio and messages, a manual clock ------------------------------------------

STT = Latency(ttfb=Fixed(value=0.07), chunk_interval=Fixed(value=0.01))


def listen_session(**query: str) -> ListenSession:
    options = ListenOptions.model_validate({"encoding": "linear16", "sample_rate": "16000", **query})
    return ListenSession(
        options,
        request_id="req-1",
        model_uuid="uuid-1",
        created="2026-01-01T00:00:00.000Z",
        plan=Plan(STT, random.Random(0)),
        now=0.0,
    )


def messages(actions: list[Action]) -> list[tuple[float, dict[str, Any]]]:
    return [(a.due, a.frame) for a in actions if isinstance(a, Emit) and isinstance(a.frame, dict)]


def feed_realtime(session: ListenSession, data: bytes, fmt: AudioFormat) -> tuple[list[Action], list[float]]:
    """Feed 20 ms frames as a real caller would: frame k arrives at (k + 1) * 20 ms."""
    actions: list[Action] = []
    arrivals = []
    for k, frame in enumerate(frames(data, fmt)):
        arrivals.append((k + 1) * 0.02)
        actions += session.receive_binary(frame, arrivals[-1])
    return actions, arrivals


def test_final_is_due_endpointing_plus_ttfb_after_the_phrase_ends() -> None:
    session = listen_session(endpointing="300")
    actions, arrivals = feed_realtime(session, phrase_audio(TEXT, PCM_16K), PCM_16K)
    finals = [(due, m) for due, m in messages(actions) if m.get("is_final")]
    assert len(finals) == 1
    due, final = finals[0]
    assert final["channel"]["alternatives"][0]["transcript"] == normalize_text(TEXT)
    assert final["speech_final"] is True and final["from_finalize"] is False
    assert final["start"] == pytest.approx(0.2, abs=0.01)
    end = final["start"] + final["duration"]
    end_frame = next(k for k in range(len(arrivals)) if (k + 1) * 0.02 >= end - 1e-9)
    assert due == pytest.approx(arrivals[end_frame] + 0.3 + 0.07)
    words = final["channel"]["alternatives"][0]["words"]
    assert [w["punctuated_word"] for w in words] == normalize_text(TEXT).split()
    assert words[0]["word"] == "hi" and words[-1]["word"] == "tuesday"


def test_interims_only_when_asked_and_rate_limited() -> None:
    quiet, _ = feed_realtime(listen_session(), phrase_audio(TEXT, PCM_16K), PCM_16K)
    assert [m for _, m in messages(quiet) if m["type"] == "Results" and not m["is_final"]] == []
    chatty, _ = feed_realtime(listen_session(interim_results="true"), phrase_audio(TEXT, PCM_16K), PCM_16K)
    interims = [m for _, m in messages(chatty) if m["type"] == "Results" and not m["is_final"]]
    duration = len(encode_phrase(TEXT)) / 8000
    assert 2 <= len(interims) <= duration / 0.5 + 1
    texts = [m["channel"]["alternatives"][0]["transcript"] for m in interims]
    assert all(normalize_text(TEXT).startswith(t) for t in texts)
    assert all(m["speech_final"] is False for m in interims)


def test_speech_started_and_utterance_end() -> None:
    session = listen_session(vad_events="true", utterance_end_ms="1000")
    actions, _ = feed_realtime(session, phrase_audio(TEXT, PCM_16K), PCM_16K)
    timeline = messages(actions)
    kinds = [m["type"] for _, m in timeline]
    assert kinds == ["SpeechStarted", "Results", "UtteranceEnd"]
    assert timeline[0][1]["timestamp"] == pytest.approx(0.2, abs=0.01)
    final_due, final = timeline[1]
    end_due, utterance_end = timeline[2]
    assert utterance_end["last_word_end"] == pytest.approx(final["start"] + final["duration"], abs=1e-3)
    assert end_due >= final_due and end_due - final_due == pytest.approx(1.0 - 0.01 - 0.07, abs=0.03)


def test_endpointing_false_gives_final_without_speech_final() -> None:
    session = listen_session(endpointing="false")
    actions, _ = feed_realtime(session, phrase_audio(TEXT, PCM_16K), PCM_16K)
    (final,) = [m for _, m in messages(actions) if m.get("is_final")]
    assert final["is_final"] is True and final["speech_final"] is False


def test_finalize_flushes_pending_audio_and_the_stream_goes_on() -> None:
    session = listen_session()
    assert session.receive_text('{"type": "KeepAlive"}', 0.1) == []
    # nothing pending: Deepgram still answers a Finalize, with an empty from_finalize final
    (only,) = messages(session.receive_text('{"type": "Finalize"}', 0.2))
    assert only[0] == pytest.approx(0.2 + 0.07)
    assert only[1]["from_finalize"] is True and only[1]["channel"]["alternatives"][0]["transcript"] == ""
    # half a phrase is pending when Finalize comes: it is finalized (the codec cannot read half a phrase)
    audio = phrase_audio(TEXT, PCM_16K, tail_s=0.0)
    half = audio[: len(audio) // 2 // 640 * 640]
    assert not [m for _, m in messages(session.receive_binary(half, 1.0)) if m.get("is_final")]
    (cut,) = [m for _, m in messages(session.receive_text('{"type": "Finalize"}', 1.1)) if m.get("is_final")]
    assert cut["from_finalize"] is True and cut["duration"] > 0.5
    assert cut["channel"]["alternatives"][0]["confidence"] == 0
    # the stream continues: a whole phrase after the Finalize is heard
    later = [
        m for _, m in messages(session.receive_binary(phrase_audio(OTHER, PCM_16K), 2.0)) if m.get("is_final")
    ]
    assert later[0]["channel"]["alternatives"][0]["transcript"] == normalize_text(OTHER)
    assert later[0]["start"] > cut["start"] + cut["duration"]


def test_close_stream_flushes_sends_metadata_and_closes() -> None:
    session = listen_session()
    data = phrase_audio(TEXT, PCM_16K, tail_s=0.0)[:-3]  # an odd length: the last byte has no partner
    session.receive_binary(data, 1.0)
    actions = session.receive_text(json.dumps({"type": "CloseStream"}), 1.5)
    *_, (meta_due, metadata) = messages(actions)
    assert metadata == {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": "req-1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": "2026-01-01T00:00:00.000Z",
        "duration": pytest.approx(len(data) // 2 / 16000, abs=1e-3),
        "channels": 1,
    }
    assert actions[-1] == Shut(meta_due, 1000, "")
    assert session.closed


def test_an_empty_binary_frame_closes_the_stream() -> None:
    session = listen_session()
    actions = session.receive_binary(b"", 0.5)
    assert [m["type"] for _, m in messages(actions)] == ["Metadata"]
    assert actions[-1] == Shut(actions[-2].due, 1000, "empty binary frame: end of audio")  # type: ignore[union-attr]
    assert session.closed
    lenient = ListenSession(
        ListenOptions(encoding="mulaw", sample_rate=8000),
        request_id="r",
        model_uuid="u",
        created="c",
        plan=Plan(STT, random.Random(0)),
        now=0.0,
        close_on_empty_frame=False,
    )
    assert lenient.receive_binary(b"", 0.5) == [] and not lenient.closed


def test_idle_timeout_and_unknown_messages() -> None:
    session = listen_session()
    (error,) = messages(session.receive_text("not json", 0.5))
    assert error[1]["type"] == "Error" and not session.closed
    assert session.idle_timeout(10.0) == [Shut(10.0, 1011, "NET-0001")]


def test_listen_query_parsing() -> None:
    options = ListenOptions.model_validate(
        {
            "encoding": "mulaw",
            "sample_rate": "8000.0",
            "endpointing": "false",
            "interim_results": "true",
            "x": "1",
        }
    )
    assert options.audio_format == MULAW_8K and options.endpointing is False and options.interim_results
    for bad, field in [
        ({"sample_rate": "8000"}, "encoding"),
        ({"encoding": "opus", "sample_rate": "8000"}, "encoding"),
    ]:
        with pytest.raises(ValidationError, match=field):
            ListenOptions.model_validate(bad)
    with pytest.raises(ValidationError, match="channels"):
        ListenOptions.model_validate({"encoding": "mulaw", "sample_rate": "8000", "channels": "2"})
    # query strings carry numbers as text: Pipecat sends channels=1
    assert ListenOptions.model_validate({"encoding": "mulaw", "sample_rate": "8000", "channels": "1"}).channels == 1


# -- the speak core ----------------------------------------------------------------------------------------

TTS = Latency(ttfb=Fixed(value=0.1), chunk_interval=Fixed(value=0.03))


def speak_session() -> SpeakSession:
    return SpeakSession(
        SpeakOptions(encoding="mulaw", sample_rate=8000),
        voice=PhraseVoice(),
        plan=Plan(TTS, random.Random(0)),
        chunk_ms=160,
        request_id="req-2",
        model_uuid="uuid-2",
        now=0.0,
    )


def test_speak_flush_streams_audio_then_flushed() -> None:
    session = speak_session()
    (metadata,) = session.opened(0.0)
    assert isinstance(metadata, Emit) and metadata.frame["type"] == "Metadata"  # type: ignore[index]
    assert session.receive_text(json.dumps({"type": "Speak", "text": "Hello there, "}), 1.0) == []
    assert session.receive_text(json.dumps({"type": "Speak", "text": "how are you?"}), 1.0) == []
    actions = session.receive_text('{"type": "Flush"}', 1.0)
    audio = [a for a in actions if isinstance(a, Emit) and isinstance(a.frame, bytes)]
    assert audio[0].due == pytest.approx(1.1)
    assert [round(b.due - a.due, 6) for a, b in itertools.pairwise(audio)] == [0.03] * (len(audio) - 1)
    assert all(len(a.frame) <= 1280 for a in audio)  # 160 ms of 8 kHz μ-law
    assert decoded_texts(b"".join(a.frame for a in audio), MULAW_8K) == ["Hello there, how are you?"]  # type: ignore[misc]
    assert actions[-1] == Emit(audio[-1].due, {"type": "Flushed", "sequence_id": 0}, "audio")
    # Clear drops what is not sent yet and acknowledges; Close waits for nothing more
    assert session.receive_text('{"type": "Clear"}', 1.2) == [
        Discard("audio"),
        Emit(1.2, {"type": "Cleared", "sequence_id": 1}),
    ]
    assert session.receive_text('{"type": "Close"}', 1.3) == [Shut(1.3)]


# -- the server, through the official SDK --------------------------------------------------------------------


def fast_config(**overrides: Any) -> DeepgramConfig:
    return DeepgramConfig.model_validate(
        {
            "stt": {"ttfb": 0.0, "chunk_interval": 0.0},
            "tts": {"ttfb": 0.0, "chunk_interval": 0.0},
            **overrides,
        }
    )


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_app(create_deepgram_app(fast_config())) as url:
        yield url


def sdk(base_url: str) -> AsyncDeepgramClient:
    ws = "ws" + base_url.removeprefix("http")
    environment = DeepgramClientEnvironment(base=base_url, production=ws, agent=ws, agent_rest=base_url)
    return AsyncDeepgramClient(api_key="dg-test-key", environment=environment)


async def transcribe(
    base_url: str, fmt: AudioFormat, audio: bytes, *, declared: AudioFormat | None = None, **query: str
) -> list[Any]:
    """Stream ``audio`` in 20 ms frames, then CloseStream; every message the SDK parsed, in order."""
    declared = declared or fmt
    received: list[Any] = []
    async with asyncio.timeout(30):
        async with sdk(base_url).listen.v1.connect(
            model="nova-3", encoding=declared.encoding, sample_rate=str(declared.sample_rate), **query
        ) as socket:
            for frame in frames(audio, fmt):
                await socket.send_media(frame)
            await socket.send_close_stream()
            async for message in socket:
                received.append(message)
    return received


def finals(received: list[Any]) -> list[ListenV1Results]:
    return [m for m in received if isinstance(m, ListenV1Results) and m.is_final]


async def test_sdk_transcribes_linear16_16k_with_interims(base_url: str) -> None:
    received = await transcribe(base_url, PCM_16K, phrase_audio(TEXT, PCM_16K), interim_results="true")
    (final,) = finals(received)
    assert final.channel.alternatives[0].transcript == normalize_text(TEXT)
    assert final.speech_final is True and final.channel.alternatives[0].confidence > 0.9
    assert final.metadata.model_info.name == "nova-3"
    interims = [m for m in received if isinstance(m, ListenV1Results) and not m.is_final]
    assert interims and received.index(interims[-1]) < received.index(final)
    assert isinstance(received[-1], ListenV1Metadata) and received[-1].channels == 1


async def test_sdk_transcribes_mulaw_8k_without_interims(base_url: str) -> None:
    audio = phrase_audio(TEXT, MULAW_8K) + phrase_audio(OTHER, MULAW_8K)
    received = await transcribe(
        base_url, MULAW_8K, audio, vad_events="true", utterance_end_ms="1000", endpointing="300"
    )
    assert [f.channel.alternatives[0].transcript for f in finals(received)] == [
        normalize_text(TEXT),
        normalize_text(OTHER),
    ]
    assert not [m for m in received if isinstance(m, ListenV1Results) and not m.is_final]
    assert sum(isinstance(m, ListenV1SpeechStarted) for m in received) == 2
    assert sum(isinstance(m, ListenV1UtteranceEnd) for m in received) == 2
    metadata = received[-1]
    assert isinstance(metadata, ListenV1Metadata)
    assert metadata.transaction_key == "deprecated"
    assert metadata.sha256 == hashlib.sha256(audio).hexdigest()
    assert metadata.duration == pytest.approx(len(audio) / 8000, abs=1e-3)


async def test_sdk_declared_linear16_but_sent_mulaw_gets_empty_finals(base_url: str) -> None:
    received = await transcribe(base_url, MULAW_8K, phrase_audio(TEXT, MULAW_8K), declared=PCM_16K)
    results = finals(received)
    assert results, "the garbled audio must still produce a final result"
    assert all(r.channel.alternatives[0].transcript == "" for r in results)
    assert all(r.channel.alternatives[0].confidence == 0 for r in results)


async def test_sdk_finalize_answers_from_finalize(base_url: str) -> None:
    audio = phrase_audio(TEXT, PCM_16K, tail_s=0.0)
    async with (
        asyncio.timeout(30),
        sdk(base_url).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate="16000") as socket,
    ):
        for frame in frames(audio[: len(audio) // 2 // 640 * 640], PCM_16K):
            await socket.send_media(frame)
        await socket.send_finalize()
        message = await socket.recv()
        assert isinstance(message, ListenV1Results)
        assert message.is_final and message.from_finalize and message.duration > 0.5
        for frame in frames(phrase_audio(OTHER, PCM_16K), PCM_16K):
            await socket.send_media(frame)
        message = await socket.recv()
        assert isinstance(message, ListenV1Results) and message.from_finalize is False
        assert message.channel.alternatives[0].transcript == normalize_text(OTHER)


async def test_missing_auth_is_refused_with_401(base_url: str) -> None:
    with pytest.raises(ApiError) as info:
        async with sdk(base_url).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate="16000", authorization=""
        ):
            pass
    assert info.value.status_code == 401
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await session.ws_connect(f"{base_url}/v1/listen?encoding=linear16&sample_rate=16000")
        assert handshake.value.status == 401
        async with session.post(f"{base_url}/v1/speak?encoding=linear16", json={"text": "hi"}) as response:
            assert response.status == 401
            assert (await response.json())["err_code"] == "INVALID_AUTH"
        # the browser form of the key (Sec-WebSocket-Protocol: token, <key>) is accepted
        async with session.ws_connect(
            f"{base_url}/v1/listen?encoding=linear16&sample_rate=16000", protocols=("token", "dg-key")
        ) as ws:
            assert ws.protocol == "token"


async def test_idle_socket_is_closed_with_net_0001() -> None:
    async with serve_app(create_deepgram_app(fast_config(idle_timeout_s=0.3))) as url:
        ws_url = "ws" + url.removeprefix("http") + "/v1/listen?encoding=mulaw&sample_rate=8000"
        async with (
            asyncio.timeout(10),
            websockets.connect(ws_url, additional_headers={"Authorization": "Token k"}) as ws,
        ):
            with pytest.raises(websockets.ConnectionClosedError) as info:
                await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "NET-0001")


async def test_final_transcript_comes_no_sooner_than_endpointing_plus_ttfb() -> None:
    app = create_deepgram_app(fast_config(stt={"ttfb": 0.3, "chunk_interval": 0.0}))
    lead, tail = 0.2, 0.2  # trailing silence, as a phone line sends: it lets the audio reach the decoder
    audio = phrase_audio(TEXT, PCM_16K, lead_s=lead, tail_s=tail)
    phrase_end = len(audio) / PCM_16K.bytes_per_second - tail
    loop = asyncio.get_running_loop()
    async with (
        serve_app(app) as url,
        asyncio.timeout(30),
        sdk(url).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate="16000", endpointing="100"
        ) as socket,
    ):
        sent_end = None
        for k, frame in enumerate(frames(audio, PCM_16K)):
            await socket.send_media(frame)
            if sent_end is None and (k + 1) * 0.02 >= phrase_end:
                sent_end = loop.time()  # the server cannot have the phrase's last frame before this
        message = await socket.recv()
        received = loop.time()
    assert isinstance(message, ListenV1Results) and message.speech_final
    assert message.channel.alternatives[0].transcript == normalize_text(TEXT)
    assert sent_end is not None and received - sent_end >= 0.1 + 0.3


async def test_sdk_speak_rest_returns_phrase_audio(base_url: str) -> None:
    client = sdk(base_url)
    for fmt in (PCM_16K, MULAW_8K):
        chunks = [
            chunk
            async for chunk in client.speak.v1.audio.generate(
                text=TEXT,
                model="aura-2-thalia-en",
                encoding=fmt.encoding,
                sample_rate=fmt.sample_rate,
                container="none",
            )
        ]
        assert decoded_texts(b"".join(chunks), fmt) == [normalize_text(TEXT)]
    # without container=none Deepgram wraps raw audio in a WAV header
    wav = b"".join(
        [c async for c in client.speak.v1.audio.generate(text=OTHER, encoding="linear16", sample_rate=24000)]
    )
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert decoded_texts(wav[44:], AudioFormat("linear16", 24000)) == [normalize_text(OTHER)]


async def test_speak_rest_is_streamed_in_chunks_after_ttfb() -> None:
    config = fast_config(tts={"ttfb": 0.3, "chunk_interval": 0.02}, tts_chunk_ms=100)
    app = create_deepgram_app(config)
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        started = asyncio.get_running_loop().time()
        async with session.post(
            f"{url}/v1/speak?encoding=mulaw&sample_rate=8000&container=none",
            json={"text": TEXT},
            headers={"Authorization": "Token k"},
        ) as response:
            first = await response.content.readany()
            ttfb = asyncio.get_running_loop().time() - started
            rest = await response.read()
            assert response.headers["dg-model-name"] == "aura-2-thalia-en"
    assert ttfb >= 0.3
    assert 0 < len(first) < len(first + rest)
    assert decoded_texts(first + rest, MULAW_8K) == [normalize_text(TEXT)]
    counters = gate_of(app).counters
    assert counters.by_route["/v1/speak"] == 1 and counters.active == 0


async def test_sdk_speak_websocket_flush_clear_close() -> None:
    # 160 ms chunks 20 ms apart: a flushed phrase takes a few hundred ms to stream, long enough to interrupt
    app = create_deepgram_app(fast_config(tts={"ttfb": 0.0, "chunk_interval": 0.02}))
    async with (
        serve_app(app) as url,
        asyncio.timeout(30),
        sdk(url).speak.v1.connect(
            model="aura-2-thalia-en", encoding="linear16", sample_rate="16000"
        ) as socket,
    ):
        assert isinstance(await socket.recv(), SpeakV1Metadata)
        await socket.send_text(SpeakV1Text(text="Hello there, "))
        await socket.send_text(SpeakV1Text(text=TEXT))
        await socket.send_flush()
        audio = b""
        while not isinstance(message := await socket.recv(), SpeakV1Flushed):
            assert isinstance(message, bytes)
            audio += message
        assert message.type == "Flushed" and message.sequence_id == 0
        assert decoded_texts(audio, PCM_16K) == [normalize_text("Hello there, " + TEXT)]

        # barge-in: Clear while the next phrase streams drops the rest of its audio and its Flushed
        await socket.send_text(SpeakV1Text(text=TEXT))
        await socket.send_flush()
        first = await socket.recv()
        assert isinstance(first, bytes)
        await socket.send_clear()
        interrupted = first
        while isinstance(message := await socket.recv(), bytes):
            interrupted += message
        # the SDK's union parses Cleared as SpeakV1Flushed (both models accept type "Cleared"): check the type
        assert isinstance(message, SpeakV1Flushed | SpeakV1Cleared) and message.type == "Cleared"
        assert len(interrupted) < len(phrase_audio(TEXT, PCM_16K, lead_s=0, tail_s=0))
        assert decoded_texts(interrupted, PCM_16K) == []

        await socket.send_close()
        with pytest.raises(websockets.ConnectionClosedOK):
            await socket.recv()
