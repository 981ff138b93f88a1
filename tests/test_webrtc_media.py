"""Phrase audio over a real WebRTC audio track (Opus, as aiortc negotiates it) between two loopback peers: a clean
path decodes every phrase whole; 5 % loss and 40 ms jitter on the path, through the impairment relay, leave a
measurably smaller share of the phrase intact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from harness.audio.phrase_codec import DecodedPhrase, PhraseDecoder, UndecodableAudio, encode_phrase
from harness.webrtc.impairment import Impairment
from harness.webrtc.loopback import gather_on_loopback_only, loopback_peer
from harness.webrtc.media import PhraseTrack, TrackListener
from harness.webrtc.relay import UdpRelay, route_through

pytestmark = pytest.mark.e2e

PHRASES = ["Sure, I can book a cleaning.", "Which day works for you?", "Tuesday at ten is free. Shall I book it?"]


async def _speak_and_hear(impairment: Impairment | None) -> tuple[list[Any], dict[str, Any], str]:
    speaker, hearer = loopback_peer(), loopback_peer()
    track = PhraseTrack()
    speaker.addTrack(track)
    decoder = PhraseDecoder()
    listener = TrackListener()
    events: list[Any] = []
    pulls: list[asyncio.Task[None]] = []

    @hearer.on("track")
    def on_track(remote: Any) -> None:
        async def listen() -> None:
            while True:
                events.extend(decoder.feed(listener.samples(await remote.recv())))

        pulls.append(asyncio.ensure_future(listen()))

    relay = UdpRelay(None, impairment, seed=11) if impairment is not None else None
    try:
        gather_on_loopback_only(speaker)
        await speaker.setLocalDescription(await speaker.createOffer())
        offer = speaker.localDescription.sdp
        if relay is not None:
            await relay.start()
            offer, relay.caller = route_through(offer, relay.far_address)
        await hearer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        gather_on_loopback_only(hearer)
        await hearer.setLocalDescription(await hearer.createAnswer())
        answer = hearer.localDescription.sdp
        if relay is not None:
            answer, relay.far_end = route_through(answer, relay.near_address)
        await speaker.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        codec = next(line for line in answer.splitlines() if line.startswith("a=rtpmap:"))
        await asyncio.sleep(0.5)
        for text in PHRASES:
            track.say(encode_phrase(text), 8000)
        for _ in range(300):  # until every phrase has played out and been judged (bounded: 15 s)
            await asyncio.sleep(0.05)
            if not track.speaking and sum(isinstance(e, DecodedPhrase | UndecodableAudio) for e in events) >= 3:
                break
        await asyncio.sleep(1.0)
        events.extend(decoder.flush())
        return events, relay.stats() if relay is not None else {}, codec
    finally:
        for task in pulls:
            task.cancel()
        await speaker.close()
        await hearer.close()
        if relay is not None:
            await relay.close()


def _intact(events: list[Any]) -> float:
    phrases = [e for e in events if isinstance(e, DecodedPhrase | UndecodableAudio) and e.symbols]
    symbols = sum(e.symbols for e in phrases)
    clear = sum(e.symbols if isinstance(e, DecodedPhrase) else e.clear_symbols for e in phrases)
    return clear / symbols if symbols else 0.0


async def test_phrases_sent_as_a_webrtc_track_decode_whole_on_a_clean_path() -> None:
    events, _, codec = await _speak_and_hear(None)
    decoded = [e.text for e in events if isinstance(e, DecodedPhrase)]
    assert decoded == PHRASES, (codec, events)
    assert _intact(events) == 1.0


async def test_loss_and_jitter_on_the_path_lower_the_share_of_audio_intact() -> None:
    events, stats, codec = await _speak_and_hear(Impairment(loss_pct=5, jitter_ms=40, delay_ms=40))
    intact = _intact(events)
    lost = stats["caller_to_far_end"]["lost"]
    assert lost > 0, stats
    assert intact < 0.99, (codec, intact, events)


def test_a_lost_frame_is_concealed_as_silence_of_its_length_and_a_late_one_is_dropped() -> None:
    import fractions

    import av
    import numpy as np

    def frame(pts: int) -> av.AudioFrame:
        f = av.AudioFrame.from_ndarray(np.full((1, 960), 8000, dtype=np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 48000, pts, fractions.Fraction(1, 48000)
        return f

    listener = TrackListener()
    out = [listener.samples(frame(pts)) for pts in (0, 960, 2880, 1920, 3840)]  # 1920 lost, then arrives late
    assert listener.concealed_ms == pytest.approx(20.0) and listener.late_frames == 1
    assert len(out[3]) == 0
    # the same length of timeline as five frames received in order (the resampler holds back the same tail)
    whole = TrackListener()
    assert sum(len(x) for x in out) == sum(len(whole.samples(frame(p))) for p in (0, 960, 1920, 2880, 3840))
