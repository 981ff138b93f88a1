"""The reference runtime answers WebRTC (issue 7, point 3): ``POST /webrtc/offer`` against the runtime and the fake
providers in-process, with a real aiortc caller on loopback speaking and hearing phrase audio over Opus.

Every wait is on a frame, a state change or an HTTP answer, bounded by a timeout that only fires when something is
broken. The caller's listener re-checks its conditions at every frame it receives (50 a second, silence included),
so "the greeting has played" is a condition on the runtime's own playout, not a sleep.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, from_bytes
from harness.audio.phrase_codec import DecodedPhrase, PhraseDecoder, PhraseEvent, UndecodableAudio, encode_phrase
from harness.webrtc.loopback import candidates, gather_on_loopback_only, loopback_peer
from harness.webrtc.media import PhraseTrack, TrackListener
from harness.webrtc.signalling import Answer, exchange_offer
from reference_runtime.app import RUNTIME
from reference_runtime.audio_plan import plan_audio
from reference_runtime.call import Call
from reference_runtime.config import parse_config
from reference_runtime.media_stream import StreamStarted
from reference_runtime.webrtc import (
    FRAME_SAMPLES,
    AgentTrack,
    BadOffer,
    CallerAudio,
    OutboundAudio,
    parse_offer,
)
from tests.test_runtime_call import GOODBYE, GREETING, STEP_TIMEOUT_S, Stack, metric, stack

pytestmark = pytest.mark.e2e

#: the agent of tests/test_runtime_call.py with one objective: the caller's first turn is answered, then the goodbye
ONE_TURN = {
    "greeting": GREETING,
    "objectives": [{"name": "ask", "instruction": "Ask which day suits the caller.", "next": None}],
    "goodbye": GOODBYE,
}
GREETING_SENTENCES = ["Hello, this is the clinic.", "How can I help?"]
REPLY = "Which day works for you?"
#: frames the caller keeps listening after the runtime's playout is over: its jitter buffer holds a few (aiortc: 4)
TAIL_FRAMES = 15


# --- a minimal aiortc caller --------------------------------------------------------------------------------------


class WebRtcCaller:
    """Phrase audio out (:class:`PhraseTrack`), what it hears decoded (:class:`TrackListener` + :class:`PhraseDecoder`,
    as tests/test_webrtc_media.py does), and every connection state and the remote track's end, as they happen."""

    def __init__(self) -> None:
        self.pc = loopback_peer()
        self.track = PhraseTrack()
        self.pc.addTrack(self.track)
        self.listener = TrackListener()
        self.decoder = PhraseDecoder()
        self.events: list[PhraseEvent] = []
        self.states: list[str] = []
        self.track_ended = False
        self.peak = 0.0  # loudest sample heard
        self.closed_by_us = False
        self._changed = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def dial(self, s: Stack) -> Answer:
        gather_on_loopback_only(self.pc)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await exchange_offer(s.http, f"{s.url}/webrtc/offer", self.pc.localDescription)
        await self.pc.setRemoteDescription(answer.description)
        return answer

    def say(self, text: str) -> None:
        self.track.say(encode_phrase(text), 8000)

    def texts(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, DecodedPhrase)]

    def judged(self) -> list[PhraseEvent]:
        return [e for e in self.events if isinstance(e, DecodedPhrase | UndecodableAudio)]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds (checked at every frame heard and every state change)."""
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def frames_later(self, count: int) -> None:
        target = self.listener.frames + count
        await self.until(lambda: self.listener.frames >= target or self.track_ended)

    async def finish_hearing(self) -> None:
        """End of what is heard: the decoder judges the audio it holds."""
        self.events.extend(self.decoder.flush())

    async def hang_up(self) -> None:
        self.closed_by_us = True
        await self.close()

    async def close(self) -> None:
        await self.pc.close()
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)

    def _on_track(self, remote: MediaStreamTrack) -> None:
        self._listening = asyncio.ensure_future(self._listen(remote))

    async def _listen(self, remote: MediaStreamTrack) -> None:
        try:
            while True:
                samples = self.listener.samples(await remote.recv())  # type: ignore[arg-type]
                if len(samples):
                    self.peak = max(self.peak, float(np.max(np.abs(samples))))
                self.events.extend(self.decoder.feed(samples))
                self._changed.set()
        except MediaStreamError:
            self.track_ended = True
            self._changed.set()

    def _on_state(self) -> None:
        self.states.append(self.pc.connectionState)
        self._changed.set()


def only_call(s: Stack) -> Call:
    calls = list(s.app[RUNTIME].calls.values())
    assert len(calls) == 1, calls
    return calls[0]


def call_started(s: Stack) -> Callable[[], bool]:
    """The runtime's call has its ``start`` (its peer connection is connected): a hang-up from now on is the
    caller's, not a call that never started."""
    return lambda: any(call.start is not None for call in s.app[RUNTIME].calls.values())


def greeting_played(s: Stack) -> Callable[[], bool]:
    """The runtime's own playout: the greeting's response is over and every mark it sent was echoed."""

    def played() -> bool:
        calls = list(s.app[RUNTIME].calls.values())
        if not calls:
            return False
        call = calls[0]
        responding = call._response is not None and not call._response.done()
        return call.playout.sent_s > 0 and not responding and not call.playout.speaking

    return played


async def post_offer(s: Stack, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, str) else json.dumps(body)
    async with s.http.post(f"{s.url}/webrtc/offer", data=data,
                           headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None)


async def a_real_offer() -> str:
    pc = loopback_peer()
    try:
        pc.addTrack(PhraseTrack())
        gather_on_loopback_only(pc)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


# --- signalling ---------------------------------------------------------------------------------------------------


async def test_the_answer_is_loopback_only_and_bad_offers_are_refused_naming_what_is_wrong() -> None:
    async with stack() as s:
        caller = WebRtcCaller()
        try:
            answer = await caller.dial(s)
            found = candidates(answer.description.sdp)
            assert found and {c.address for c in found} == {"127.0.0.1"}, answer.description.sdp
            assert answer.pc_id and answer.pc_id.startswith("PC")
            await caller.until(call_started(s))
        finally:
            await caller.hang_up()
        await s.idle()

        offer = await a_real_offer()
        line = next(x for x in offer.splitlines() if x.startswith("a=candidate:"))
        outside = offer.replace(line, f"{line}\r\na=candidate:9 1 udp 2130706431 192.168.1.20 50001 typ host")
        status, body = await post_offer(s, {"sdp": outside, "type": "offer"})
        assert status == 400 and "192.168.1.20:50001" in body["error"], body

        refused = {
            "{not json": "not JSON",
            "[]": "JSON object",
            json.dumps({"type": "offer"}): "'sdp' is missing",
            json.dumps({"sdp": "", "type": "offer"}): "'sdp' must be a non-empty string",
            json.dumps({"sdp": offer, "type": "answer"}): "'type' must be 'offer'",
            json.dumps({"sdp": offer, "type": "offer", "pc_id": 7}): "'pc_id' must be a string",
            json.dumps({"sdp": offer, "type": "offer", "restart_pc": True}): "not supported",
            json.dumps({"sdp": "v=0\r\n", "type": "offer"}): "no audio m-line",
        }
        for request, reason in refused.items():
            status, body = await post_offer(s, request)
            assert status == 400 and reason in body["error"], (request[:60], body)

        assert s.app[RUNTIME].admission.active == set()  # nothing refused above took a slot
        text = await s.metrics()
    assert metric(text, "runtime_calls_total", outcome="caller_hangup") == 1.0


async def test_a_full_runtime_answers_503_as_media_does_and_a_caller_hanging_up_ends_the_call() -> None:
    async with stack(capacity=1) as s:
        caller = WebRtcCaller()
        try:
            answer = await caller.dial(s)
            await caller.until(call_started(s))
            offer = await a_real_offer()
            status, body = await post_offer(s, {"sdp": offer, "type": "offer"})
            assert (status, body) == (503, {"error": "at capacity"})
        finally:
            await caller.hang_up()
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
        assert s.app[RUNTIME].calls == {} and s.app[RUNTIME].webrtc == {}
    assert metric(text, "runtime_calls_total", outcome="refused_at_capacity") == 1.0
    assert metric(text, "runtime_calls_total", outcome="caller_hangup") == 1.0
    assert recording.call_sid == answer.pc_id and recording.audio_format == PCM_16K


# --- a call -------------------------------------------------------------------------------------------------------


async def test_a_webrtc_call_greeting_turn_goodbye_and_the_runtime_hangs_up() -> None:
    async with stack(dialog=ONE_TURN) as s:
        caller = WebRtcCaller()
        try:
            answer = await caller.dial(s)
            await caller.until(lambda: len(caller.judged()) >= 2)
            assert caller.texts() == GREETING_SENTENCES and " ".join(caller.texts()) == GREETING

            caller.say("I would like an appointment.")
            # the reply, the goodbye, then the runtime closes the peer connection: the caller sees its remote
            # track end (RTCP BYE) and its connection go to "closed" (DTLS close_notify), without closing it itself
            await caller.until(lambda: caller.track_ended and "closed" in caller.states)
            await caller.finish_hearing()
            assert not caller.closed_by_us
            assert caller.texts() == [*GREETING_SENTENCES, REPLY, GOODBYE], caller.events
            assert caller.states[-1] == "closed" and "failed" not in caller.states
        finally:
            await caller.close()
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    assert recording.outcome == "completed" and recording.call_sid == answer.pc_id
    assert recording.audio_format == PCM_16K
    assert metric(text, "runtime_calls_total", outcome="completed") == 1.0
    assert metric(text, "runtime_turns_total") == 1.0


@pytest.mark.parametrize("mode", ["broken", "fixed"])
async def test_encoding_safeguard_on_webrtc_broken_garbles_the_greeting_fixed_keeps_it_whole(mode: str) -> None:
    # Barge-in is off (no frame reaches 0 dBFS) in both modes, because broken it would cut the greeting at a random
    # point: the caller's silence is PCM zeros, which read as μ-law are full-scale noise (byte 0x00 is -32124), so
    # the runtime's VAD hears the caller talking from the first frame and barges in on its own greeting.
    async with stack(safeguards={"encoding": mode}, vad={"threshold_dbfs": 0}) as s:
        caller = WebRtcCaller()
        try:
            await caller.dial(s)
            await caller.until(greeting_played(s))
            plan = only_call(s).plan
            await caller.frames_later(TAIL_FRAMES)
            await caller.finish_hearing()
        finally:
            await caller.hang_up()
        await s.idle()
    assert plan is not None
    if mode == "fixed":
        assert plan.telephony == PCM_16K
        assert caller.texts() == GREETING_SENTENCES, caller.events
    else:  # μ-law 8 kHz bytes played as PCM 16 kHz: loud noise, nothing a phrase decoder can read
        assert plan.telephony == plan.stt == plan.tts == TWILIO_MULAW_8K
        assert caller.texts() == [], caller.events
        assert caller.peak > 0.1 and any(isinstance(e, UndecodableAudio) for e in caller.events), caller.events


async def test_shutdown_closes_the_peer_connections_and_each_call_hands_over_its_recording() -> None:
    caller = WebRtcCaller()
    try:
        async with stack() as s:
            answer = await caller.dial(s)
            await caller.until(call_started(s))
        # the app has shut down (its runner cleaned up) with the call in progress
        assert s.app[RUNTIME].webrtc == {} and s.app[RUNTIME].admission.active == set()
        await caller.until(lambda: caller.track_ended and "closed" in caller.states)
    finally:
        await caller.close()
    assert [(r.call_sid, r.outcome) for r in s.recordings.recordings] == [(answer.pc_id, "caller_hangup")]


# --- the parts, sans-I/O ------------------------------------------------------------------------------------------


def test_parse_offer_takes_pipecats_shape() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    assert parse_offer({"sdp": sdp, "type": "offer"}) == parse_offer(
        {"sdp": sdp, "type": "offer", "pc_id": None, "restart_pc": None})
    offer = parse_offer({"sdp": sdp, "type": "offer", "pc_id": "PC1", "restart_pc": True})
    assert (offer.pc_id, offer.restart_pc) == ("PC1", True)
    with pytest.raises(BadOffer, match="'restart_pc' must be a boolean"):
        parse_offer({"sdp": sdp, "type": "offer", "restart_pc": "yes"})


def test_marks_are_reached_at_their_byte_position_and_clear_echoes_the_pending_ones() -> None:
    queue = OutboundAudio()
    queue.push_audio(b"\x01" * 1000)
    queue.push_mark("a")
    queue.push_audio(b"\x02" * 300)
    queue.push_mark("b")
    assert queue.take(640) == (b"\x01" * 640, ())
    audio, reached = queue.take(640)
    assert audio == b"\x01" * 360 + b"\x02" * 280 and reached == ("a",)
    assert queue.take(640) == (b"\x02" * 20, ("b",))
    assert queue.take(640) == (b"", ())
    queue.push_mark("c")  # nothing before it is still queued: reached by the next frame
    assert queue.take(640) == (b"", ("c",))

    queue.push_audio(b"\x03" * 2000)
    queue.push_mark("d")
    queue.push_audio(b"\x04" * 10)
    queue.push_mark("e")
    queue.take(100)
    assert queue.clear() == ("d", "e") and queue.queued_bytes == 0
    queue.push_audio(b"\x05" * 4)
    queue.push_mark("f")
    assert queue.take(640) == (b"\x05" * 4, ("f",))


async def test_the_track_plays_20_ms_frames_on_an_absolute_grid_and_reports_marks_once_played() -> None:
    now = [100.0]
    played: list[tuple[str, ...]] = []
    queue = OutboundAudio()
    track = AgentTrack(queue, played.append, clock=lambda: now[0])
    queue.push_audio(np.full(FRAME_SAMPLES + 10, 1000, dtype="<i2").tobytes())
    queue.push_mark("sentence")

    first = await track.recv()  # starts the grid at 100.0
    now[0] = 105.0  # the loop is late: frames due on the grid come at once, lateness does not accumulate
    second, third = [await track.recv() for _ in range(2)]
    assert [f.pts for f in (first, second, third)] == [0, FRAME_SAMPLES, 2 * FRAME_SAMPLES]
    assert all(f.sample_rate == 16000 and f.samples == FRAME_SAMPLES for f in (first, second, third))
    assert np.all(first.to_ndarray() == 1000)
    tail = second.to_ndarray()[0]
    assert np.all(tail[:10] == 1000) and np.all(tail[10:] == 0)  # silence after the queued audio
    assert np.all(third.to_ndarray() == 0)
    # the mark's audio ended in the second frame; it is reported when that frame has played (at the third)
    assert played == [("sentence",)]
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_caller_frames_become_16_khz_mono_pcm() -> None:
    # what aiortc's Opus decoder gives: s16, stereo, 48 kHz (packed); a 1 kHz tone on both channels
    t = np.arange(960 * 10) / 48000
    tone = (np.sin(2 * np.pi * 1000 * t) * 16000).astype(np.int16)
    audio = CallerAudio()
    out = b""
    for i in range(10):
        chunk = tone[i * 960 : (i + 1) * 960]
        frame = av.AudioFrame.from_ndarray(np.repeat(chunk, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        out += audio.convert(frame)
    samples = from_bytes(out, PCM_16K)
    assert 0 < len(samples) <= 3200 and len(out) % 2 == 0
    steady = samples[len(samples) // 2 :]
    spectrum = np.abs(np.fft.rfft(steady))
    assert abs(np.argmax(spectrum) * 16000 / len(steady) - 1000) < 50  # the tone, at 16 kHz
    assert 0.4 < np.max(np.abs(steady)) < 0.6


def test_the_audio_plan_on_webrtc_and_twilio_unchanged() -> None:
    providers = {
        "stt": {"kind": "deepgram", "base_url": "http://127.0.0.1:1"},
        "llm": {"kind": "openai", "base_url": "http://127.0.0.1:2"},
        "tts": {"kind": "elevenlabs", "base_url": "http://127.0.0.1:3"},
    }
    twilio = StreamStarted("MZ1", "CA1", "AC1", ("inbound",), {}, "audio/x-mulaw", 8000, 1)
    webrtc = StreamStarted("ST1", "PC1", "", ("inbound",), {}, "linear16", 16000, 1, transport="webrtc")
    fixed = parse_config({"providers": providers, "stt_audio": {"encoding": "linear16", "sample_rate": 16000}})
    plan = plan_audio(fixed, webrtc)
    assert (plan.telephony, plan.stt, plan.tts) == (PCM_16K, PCM_16K, TWILIO_MULAW_8K)  # STT/TTS as configured
    assert plan_audio(fixed, twilio).telephony == TWILIO_MULAW_8K
    broken = parse_config({"providers": providers, "safeguards": {"encoding": "broken"}})
    assert plan_audio(broken, webrtc).telephony == TWILIO_MULAW_8K == plan_audio(broken, webrtc).stt
    assert plan_audio(broken, twilio).telephony == PCM_16K == plan_audio(broken, twilio).tts
