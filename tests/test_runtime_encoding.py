"""Safeguard 2 (incident 2, Retell + Twilio): the audio format per telephony provider and transport, and the
compatibility check of telephony, STT and TTS formats that refuses a mismatched config before any call.

Broken, the runtime hard-codes PCM 16 kHz: on Twilio PSTN the caller hears nothing the phrase codec can decode and
STT hears no words. Fixed, the same call is clean, and every incompatible combination is refused by
``check-config`` and at start, with a message naming both sides."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat
from reference_runtime.__main__ import main
from reference_runtime.app import RUNTIME, create_app
from reference_runtime.audio_plan import AudioMismatch, plan_audio
from reference_runtime.compat import IncompatibleConfig, check_config
from reference_runtime.config import parse_config
from reference_runtime.media_stream import StreamStarted
from reference_runtime.providers.base import Providers, SttEvent, Transcript
from tests.test_runtime_call import STEP_TIMEOUT_S, TwilioSide, metric, stack, webhook

PROVIDERS = {
    "stt": {"kind": "deepgram", "base_url": "http://127.0.0.1:1"},
    "llm": {"kind": "openai", "base_url": "http://127.0.0.1:2"},
    "tts": {"kind": "elevenlabs", "base_url": "http://127.0.0.1:3"},
}
WITH_FALLBACKS = {
    **PROVIDERS,
    "fallbacks": {
        "stt": [{"kind": "assemblyai", "base_url": "http://127.0.0.1:4"}],
        "tts": [{"kind": "deepgram", "base_url": "http://127.0.0.1:5"}],
    },
}


def fmt(encoding: str, rate: int) -> dict[str, Any]:
    return {"encoding": encoding, "sample_rate": rate}


#: (config beyond the providers, what the one problem must say: each side of the mismatch)
INCOMPATIBLE: dict[str, tuple[dict[str, Any], tuple[str, str]]] = {
    "pstn-declared-as-pcm16k (the incident)": (
        {"telephony_audio": fmt("linear16", 16000)},
        ("telephony twilio/pstn sends mulaw 8000 Hz", "telephony_audio is linear16 16000 Hz"),
    ),
    "twilio-webrtc-declared-as-mulaw": (
        {"telephony": {"provider": "twilio", "transport": "webrtc"}, "telephony_audio": fmt("mulaw", 8000)},
        ("telephony twilio/webrtc sends linear16 16000 Hz", "telephony_audio is mulaw 8000 Hz"),
    ),
    "daily-declared-as-mulaw": (
        {"telephony": {"provider": "daily", "transport": "webrtc"}, "telephony_audio": fmt("mulaw", 8000)},
        ("telephony daily/webrtc sends linear16 16000 Hz", "telephony_audio is mulaw 8000 Hz"),
    ),
    "no-transcoding-stt-encoding": (
        {"transcoding": False, "stt_audio": fmt("linear16", 8000)},
        ("telephony twilio/pstn sends mulaw 8000 Hz", "stt_audio is linear16 8000 Hz and no transcoding"),
    ),
    "no-transcoding-stt-rate": (
        {"transcoding": False, "stt_audio": fmt("mulaw", 16000)},
        ("telephony twilio/pstn sends mulaw 8000 Hz", "stt_audio is mulaw 16000 Hz and no transcoding"),
    ),
    "no-transcoding-tts": (
        {"transcoding": False, "stt_audio": fmt("mulaw", 8000), "tts_audio": fmt("linear16", 16000)},
        ("tts_audio is linear16 16000 Hz", "telephony twilio/pstn expects mulaw 8000 Hz and no transcoding"),
    ),
    "no-transcoding-webrtc-stt": (
        {
            "telephony": {"provider": "twilio", "transport": "webrtc"},
            "transcoding": False,
            "stt_audio": fmt("linear16", 8000),
            "tts_audio": fmt("linear16", 16000),
        },
        ("telephony twilio/webrtc sends linear16 16000 Hz", "stt_audio is linear16 8000 Hz"),
    ),
    "stt-fallback-without-alaw": (
        {"stt_audio": fmt("alaw", 8000), "providers": WITH_FALLBACKS},
        ("stt_audio is alaw 8000 Hz", "stt fallback assemblyai accepts only"),
    ),
    "elevenlabs-mulaw-16k": (
        {"tts_audio": fmt("mulaw", 16000)},
        ("tts_audio is mulaw 16000 Hz", "tts primary elevenlabs produces only"),
    ),
    "elevenlabs-alaw-16k": (
        {
            "tts_audio": fmt("alaw", 16000),
            "providers": {
                **PROVIDERS,
                "tts": {"kind": "deepgram", "base_url": "x"},
                "fallbacks": {"tts": [{"kind": "elevenlabs", "base_url": "y"}]},
            },
        },
        ("tts_audio is alaw 16000 Hz", "tts fallback elevenlabs produces only"),
    ),
    "aura-linear16-22050": (
        {"tts_audio": fmt("linear16", 22050), "providers": WITH_FALLBACKS},
        ("tts_audio is linear16 22050 Hz", "tts fallback deepgram produces only"),
    ),
}


def config_data(extra: dict[str, Any]) -> dict[str, Any]:
    return {"providers": PROVIDERS, **extra}


@pytest.mark.parametrize("case", sorted(INCOMPATIBLE))
def test_each_incompatible_combination_is_refused_naming_both_sides(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, (one_side, other_side) = INCOMPATIBLE[case]
    data = config_data(extra)

    problems = check_config(data)
    assert len(problems) == 1, problems
    assert one_side in problems[0] and other_side in problems[0], problems[0]

    # the runtime's start refuses it before any call
    with pytest.raises(IncompatibleConfig) as refused:
        create_app(parse_config(data))
    assert one_side in str(refused.value) and other_side in str(refused.value)

    # and so does the onboarding command
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    assert check_config(path) == problems
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert one_side in err and other_side in err


@pytest.mark.parametrize(
    "extra",
    [
        {},  # Twilio PSTN, STT linear16 8 kHz and TTS μ-law 8 kHz, transcoded
        {"telephony_audio": fmt("mulaw", 8000), "transcoding": False, "stt_audio": fmt("mulaw", 8000)},
        {
            "telephony": {"provider": "twilio", "transport": "webrtc"},
            "stt_audio": fmt("linear16", 16000),
            "tts_audio": fmt("linear16", 16000),
            "transcoding": False,
        },
        {"telephony": {"provider": "daily", "transport": "webrtc"}, "tts_audio": fmt("linear16", 24000)},
        {"providers": WITH_FALLBACKS, "stt_audio": fmt("mulaw", 8000)},
    ],
)
def test_compatible_configs_pass(extra: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = config_data(extra)
    assert check_config(data) == []
    create_app(parse_config(data))
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(data))
    assert main(["check-config", str(path)]) == 0
    assert "compatible" in capsys.readouterr().out


def test_broken_mode_is_reported_by_the_check_but_starts_anyway() -> None:
    data = config_data({"safeguards": {"encoding": "broken"}})
    (problem,) = check_config(data)
    assert "telephony twilio/pstn sends mulaw 8000 Hz" in problem and "hard-codes linear16 16000 Hz" in problem
    create_app(parse_config(data))  # the broken way: no check at start
    webrtc = config_data({"safeguards": {"encoding": "broken"}, "telephony": {"transport": "webrtc"}})
    assert check_config(webrtc) == []  # PCM 16 kHz is right for WebRTC


def test_an_invalid_config_is_one_problem_naming_the_field() -> None:
    (problem,) = check_config({"providers": PROVIDERS, "telephony": {"transport": "carrier-pigeon"}})
    assert "telephony.transport" in problem


def test_the_plan_per_transport_and_the_announced_format() -> None:
    start = StreamStarted("MZ1", "CA1", "AC1", ("inbound",), {}, "audio/x-mulaw", 8000, 1)
    fixed = parse_config(config_data({}))
    assert plan_audio(fixed, start).telephony == TWILIO_MULAW_8K
    broken = parse_config(config_data({"safeguards": {"encoding": "broken"}}))
    assert (
        plan_audio(broken, start).telephony == PCM_16K == plan_audio(broken, start).stt == plan_audio(broken, start).tts
    )
    webrtc = parse_config(config_data({"telephony": {"transport": "webrtc"}}))
    with pytest.raises(
        AudioMismatch, match="twilio/webrtc should send linear16 16000 Hz but this stream announces mulaw"
    ):
        plan_audio(webrtc, start)
    pcm_start = StreamStarted("MZ1", "CA1", "AC1", ("inbound",), {}, "audio/l16", 16000, 1)
    assert plan_audio(webrtc, pcm_start).telephony == AudioFormat("linear16", 16000)


def test_the_runtime_process_refuses_to_start_and_check_config_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config_data({"telephony_audio": fmt("linear16", 16000)})))
    for argv in (["serve", "--config", str(path), "--port", "0"], ["check-config", str(path)]):
        done = subprocess.run(
            [sys.executable, "-m", "reference_runtime", *argv], capture_output=True, text=True, timeout=60
        )
        assert done.returncode in (1, 2), done
        assert "telephony twilio/pstn sends mulaw 8000 Hz but telephony_audio is linear16 16000 Hz" in done.stderr
        assert "listening" not in done.stdout


# --- calls: the broken way garbles, the fixed way does not ----------------------------------------------------


class SpySpeechToText:
    """Wraps the runtime's STT: every transcript the call receives, and an event at each final."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.transcripts: list[Transcript] = []
        self.final = asyncio.Event()

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> Any:
        stream = await self.inner.open_stream(audio_format, call_id=call_id)
        spy = self

        class Stream:
            async def send_audio(self, audio: bytes) -> None:
                await stream.send_audio(audio)

            async def events(self) -> AsyncIterator[SttEvent]:
                async for event in stream.events():
                    if isinstance(event, Transcript):
                        spy.transcripts.append(event)
                        if event.is_final:
                            spy.final.set()
                    yield event

            async def close(self) -> None:
                await stream.close()

        return Stream()


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["broken", "fixed"])
async def test_twilio_pstn_call_garbled_when_broken_clean_when_fixed(mode: str) -> None:
    async with stack(safeguards={"encoding": mode}) as s:
        runtime = s.app[RUNTIME]
        assert runtime.providers is not None
        spy = SpySpeechToText(runtime.providers.stt)
        runtime.providers = Providers(stt=spy, llm=runtime.providers.llm, tts=runtime.providers.tts)  # type: ignore[arg-type]
        caller = await TwilioSide.dial(s)
        greeting = await caller.listen(sentences=2)  # decoded as Twilio plays it: μ-law 8 kHz
        # 2 s of line silence after the phrase: read as PCM 16 kHz it is only 0.5 s, still enough to end it
        await caller.say("I would like an appointment.", silence_s=2.0)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await spy.final.wait()
        if mode == "fixed":
            reply = await caller.listen(sentences=1)
        await caller.hang_up()
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    finals = [t.text for t in spy.transcripts if t.is_final]
    if mode == "broken":
        assert greeting.texts == []  # nothing the caller hears is speech
        assert max(greeting.media_sizes) == 1280  # 40 ms of PCM 16 kHz, played by Twilio as 160 ms of μ-law
        assert finals and all(f == "" for f in finals)  # STT hears noise: empty transcripts
        assert [t for t in spy.transcripts if t.text] == []
        assert metric(text, "runtime_turns_total") == 0
        assert recording.audio_format == PCM_16K
    else:
        assert greeting.texts == ["Hello, this is the clinic.", "How can I help?"]
        assert finals == ["I would like an appointment."]
        assert reply.texts == ["Which day works for you?"]
        assert recording.audio_format == TWILIO_MULAW_8K


@pytest.mark.e2e
async def test_fixed_a_stream_in_another_format_than_its_transport_is_refused() -> None:
    # configured for Twilio WebRTC (PCM 16 kHz), reached by a PSTN stream announcing μ-law 8 kHz
    async with stack(telephony={"provider": "twilio", "transport": "webrtc"}) as s:
        root = ET.fromstring(await webhook(s))
        url = root.find("./Connect/Stream").get("url")  # type: ignore[union-attr]
        async with connect(url) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "accountSid": "AC1",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": start}))
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    while True:
                        await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1008, "audio format mismatch")
        await s.idle()
        text = await s.metrics()
    assert metric(text, "runtime_calls_total", outcome="encoding_mismatch") == 1
