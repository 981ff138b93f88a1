"""The energy VAD (reference_runtime.vad): start after min_speech_ms, stop after the hangover, exact times."""

from __future__ import annotations

import numpy as np

from harness.audio.formats import TWILIO_MULAW_8K, from_bytes, to_bytes
from harness.audio.phrase_codec import encode_phrase
from reference_runtime.vad import EnergyVad, SpeechStarted, SpeechStopped, dbfs

RATE = 8000


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def test_dbfs_of_a_full_scale_sine_and_of_silence() -> None:
    assert abs(dbfs(tone(1.0, 1.0)) - (-3.01)) < 0.05
    assert dbfs(silence(0.1)) == float("-inf")


def test_speech_start_and_stop_times_with_hangover() -> None:
    vad = EnergyVad(RATE, threshold_dbfs=-40, min_speech_ms=60, hangover_ms=200)
    audio = np.concatenate([silence(0.5), tone(1.0), silence(0.5)])
    assert vad.process(audio) == [SpeechStarted(at_s=0.5), SpeechStopped(at_s=1.5)]


def test_events_do_not_depend_on_chunking() -> None:
    audio = np.concatenate([silence(0.3), tone(0.4), silence(0.6), tone(0.2), silence(0.5)])
    whole = EnergyVad(RATE, hangover_ms=300).process(audio)
    vad = EnergyVad(RATE, hangover_ms=300)
    chunked = [e for i in range(0, len(audio), 37) for e in vad.process(audio[i : i + 37])]
    assert chunked == whole
    assert [type(e) for e in whole] == [SpeechStarted, SpeechStopped, SpeechStarted, SpeechStopped]


def test_a_gap_shorter_than_the_hangover_does_not_end_speech() -> None:
    vad = EnergyVad(RATE, hangover_ms=300)
    events = vad.process(np.concatenate([tone(0.5), silence(0.2), tone(0.5), silence(0.4)]))
    assert events == [SpeechStarted(at_s=0.0), SpeechStopped(at_s=1.2)]


def test_a_click_shorter_than_min_speech_is_not_speech() -> None:
    vad = EnergyVad(RATE, min_speech_ms=100)
    assert vad.process(np.concatenate([silence(0.2), tone(0.04), silence(0.5)])) == []
    assert not vad.speaking


def test_quiet_noise_below_the_threshold_is_not_speech() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(RATE * 2) * 10 ** (-50 / 20)).astype(np.float32)
    assert EnergyVad(RATE, threshold_dbfs=-38).process(noise) == []


def test_phrase_audio_through_mulaw_is_heard_as_one_stretch_of_speech() -> None:
    phrase = encode_phrase("I would like to book an appointment for Tuesday.", RATE)
    audio = np.concatenate([silence(0.5), phrase, silence(1.0)])
    wire = from_bytes(to_bytes(audio, TWILIO_MULAW_8K), TWILIO_MULAW_8K)
    events = EnergyVad(RATE).process(wire)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert abs(events[0].at_s - 0.5) <= 0.02
    assert abs(events[1].at_s - (0.5 + len(phrase) / RATE)) <= 0.04
