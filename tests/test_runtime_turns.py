"""Playout bookkeeping, endpointing and transcoding: the sans-I/O parts of a call's turn-taking."""

from __future__ import annotations

import numpy as np

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat, from_bytes, to_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, encode_phrase
from reference_runtime.endpointing import CallerTurn, Endpointer
from reference_runtime.playout import Playout
from reference_runtime.transcoder import Transcoder


def test_playout_speaking_until_the_last_mark_is_echoed() -> None:
    playout = Playout()
    assert not playout.speaking
    playout.audio_sent(1.0)
    assert playout.speaking and playout.queued_s == 1.0
    playout.mark_sent("a")
    playout.audio_sent(0.5)
    playout.mark_sent("b")
    assert playout.pending_marks == ("a", "b")
    assert playout.mark_echoed("a")
    assert playout.speaking and playout.queued_s == 0.5
    assert playout.mark_echoed("b")
    assert not playout.speaking


def test_a_later_echo_implies_the_earlier_marks_played_and_clear_forgets_everything() -> None:
    playout = Playout()
    for name in "abc":
        playout.audio_sent(0.2)
        playout.mark_sent(name)
    assert playout.mark_echoed("b")
    assert playout.pending_marks == ("c",)
    playout.audio_sent(0.1)
    assert playout.cleared() == ("c",)
    assert not playout.speaking
    assert not playout.mark_echoed("c")  # Twilio echoes cleared marks: they are no longer ours


def test_endpointer_joins_finals_until_speech_final() -> None:
    ep = Endpointer()
    assert ep.transcript("I would", is_final=False, speech_final=False) is None
    assert ep.transcript("I would like", is_final=True, speech_final=False, start=0.0, duration=1.0) is None
    turn = ep.transcript("an appointment.", is_final=True, speech_final=True, start=1.0, duration=1.2)
    assert turn == CallerTurn("I would like an appointment.", 2.2)
    assert ep.utterance_end() is None  # nothing pending after speech_final


def test_endpointer_utterance_end_flushes_and_empty_finals_do_not_make_turns() -> None:
    ep = Endpointer()
    assert ep.transcript("", is_final=True, speech_final=True) is None
    assert ep.transcript("yes", is_final=True, speech_final=False, start=3.0, duration=0.4) is None
    assert ep.utterance_end() == CallerTurn("yes", 3.4)


def test_transcoder_mulaw_8k_to_linear16_16k_keeps_phrase_audio_decodable() -> None:
    phrase = encode_phrase("Tuesday at ten", 8000)
    wire = to_bytes(
        np.concatenate([np.zeros(800, np.float32), phrase, np.zeros(1600, np.float32)]), TWILIO_MULAW_8K
    )
    transcoder = Transcoder(TWILIO_MULAW_8K, PCM_16K)
    out = (
        b"".join(transcoder.process(wire[i : i + 160]) for i in range(0, len(wire), 160)) + transcoder.flush()
    )
    assert abs(len(out) / PCM_16K.bytes_per_second - len(wire) / 8000) < 0.01
    events = decode_phrases(from_bytes(out, PCM_16K), 16000)
    assert [e.text for e in events if isinstance(e, DecodedPhrase)] == ["Tuesday at ten"]


def test_transcoder_carries_a_split_linear16_sample() -> None:
    src = AudioFormat("linear16", 8000)
    data = to_bytes(np.linspace(-0.5, 0.5, 101, dtype=np.float32), src)
    transcoder = Transcoder(src, TWILIO_MULAW_8K)
    out = transcoder.process(data[:51]) + transcoder.process(data[51:]) + transcoder.flush()
    assert out == to_bytes(from_bytes(data, src), TWILIO_MULAW_8K)
    assert Transcoder(TWILIO_MULAW_8K, TWILIO_MULAW_8K).process(b"\x01\x02") == b"\x01\x02"
