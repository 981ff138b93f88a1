"""The phrase codec: text survives the telephone path, and audio under the wrong format never yields a wrong text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.audio import formats
from harness.audio import phrase_codec as pc
from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat
from harness.audio.phrase_codec import (
    CODEC_SAMPLE_RATE,
    DecodedPhrase,
    PhraseDecoder,
    PhraseProgress,
    UndecodableAudio,
    decode_phrases,
    encode_phrase,
    normalize_text,
    phrase_duration,
)
from harness.audio.wav import read_wav, write_wav

SENTENCE = "Hi, I'd like to move my appointment to Friday."
MIXED = "ABC Def 0123456789 '!-:;&/%$@\"()+=*# .,? The END"


def texts(events: list) -> list[str]:
    return [e.text for e in events if isinstance(e, DecodedPhrase)]


def finals(events: list) -> list:
    return [e for e in events if not isinstance(e, PhraseProgress)]


def assert_undecodable(events: list) -> None:
    """A mismatch or non-phrase audio: reported, and never as a phrase."""
    assert not [e for e in events if isinstance(e, DecodedPhrase)], events
    assert any(isinstance(e, UndecodableAudio) for e in events), events


def silence(seconds: float, rate: int = CODEC_SAMPLE_RATE) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def through(samples: np.ndarray, fmt: AudioFormat) -> np.ndarray:
    return formats.from_bytes(formats.to_bytes(samples, fmt), fmt)


def feed_in_chunks(decoder: PhraseDecoder, samples: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, len(samples), chunk):
        events += decoder.feed(samples[i : i + chunk])
    return events + decoder.flush()


# --- the signal ----------------------------------------------------------------------------------------------------


def test_encode_shape_level_and_duration() -> None:
    audio = encode_phrase(SENTENCE)
    assert audio.dtype == np.float32
    assert len(audio) == round(phrase_duration(SENTENCE) * CODEC_SAMPLE_RATE)
    assert 0.45 <= float(np.max(np.abs(audio))) <= 0.55
    # no leading or trailing silence: the first and last 5 ms already carry energy
    assert np.max(np.abs(audio[:40])) > 0.05 and np.max(np.abs(audio[-40:])) > 0.05
    # 60 ms per symbol: 7 framing symbols + one per lower-case character
    assert phrase_duration("hello") == pytest.approx(12 * 0.060)
    assert len(encode_phrase(SENTENCE, 16000)) == pytest.approx(2 * len(audio), abs=1)


def test_syllable_envelope_never_reaches_zero_inside_a_phrase() -> None:
    audio = encode_phrase("a phrase long enough to show its syllable rhythm")
    frame = 80  # 10 ms
    rms = np.sqrt(np.mean(audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    assert rms.min() > 0.25 * rms.max()  # dips, never a pause
    # the envelope moves at a syllable rate (4-6 Hz): its spectrum peaks there
    spectrum = np.abs(np.fft.rfft(rms - rms.mean(), 4096))
    peak_hz = np.argmax(spectrum) * 100 / 4096
    assert 4.0 <= peak_hz <= 6.0


# --- round trips ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [SENTENCE, "yes", "", MIXED, "x" * 300])
def test_round_trip_8k_float(text: str) -> None:
    events = decode_phrases(encode_phrase(text), CODEC_SAMPLE_RATE)
    assert events == [DecodedPhrase(normalize_text(text), 0.0, phrase_duration(text))]


def test_round_trip_through_mulaw_8k_bytes() -> None:
    audio = np.concatenate([silence(0.2), encode_phrase(MIXED), silence(0.2)])
    assert texts(decode_phrases(through(audio, TWILIO_MULAW_8K), 8000)) == [MIXED]


def test_round_trip_through_alaw_8k_bytes() -> None:
    audio = np.concatenate([silence(0.2), encode_phrase(SENTENCE), silence(0.2)])
    assert texts(decode_phrases(through(audio, AudioFormat("alaw", 8000)), 8000)) == [SENTENCE]


def test_resampled_to_16k_decodes_at_16k() -> None:
    audio = np.concatenate([silence(0.3), encode_phrase(SENTENCE), silence(0.3)])
    up = through(formats.resample(audio, 8000, 16000), PCM_16K)
    [event] = decode_phrases(up, 16000)
    assert isinstance(event, DecodedPhrase) and event.text == SENTENCE
    assert event.start == pytest.approx(0.3, abs=0.005)
    assert event.end == pytest.approx(0.3 + phrase_duration(SENTENCE), abs=0.005)


def test_resampled_8k_16k_8k_through_mulaw() -> None:
    audio = np.concatenate([silence(0.3), encode_phrase(MIXED), silence(0.3)])
    there_and_back = formats.resample(formats.resample(audio, 8000, 16000), 16000, 8000)
    assert texts(decode_phrases(through(there_and_back, TWILIO_MULAW_8K), 8000)) == [MIXED]


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_encoded_at_other_rates_as_linear16(rate: int) -> None:
    audio = np.concatenate([silence(0.25, rate), encode_phrase(SENTENCE, rate), silence(0.25, rate)])
    [event] = decode_phrases(through(audio, AudioFormat("linear16", rate)), rate)
    assert isinstance(event, DecodedPhrase) and event.text == SENTENCE
    assert event.start == pytest.approx(0.25, abs=0.005)
    assert event.end == pytest.approx(0.25 + phrase_duration(SENTENCE), abs=0.005)


@pytest.mark.parametrize("gain_db", [-20.0, -6.0, 0.0, 5.0])
def test_scale_invariant(gain_db: float) -> None:
    audio = np.concatenate([silence(0.2), encode_phrase(SENTENCE), silence(0.2)]) * 10 ** (gain_db / 20)
    assert texts(decode_phrases(through(audio, TWILIO_MULAW_8K), 8000)) == [SENTENCE]


def test_uppercase_digits_and_punctuation() -> None:
    text = 'Call ME at 555-0199 (ext. #42) re: "Order 7/B" & pay $19.99 + 5% tax; ok? Yes! 100*2=200'
    assert normalize_text(text) == text
    assert texts(decode_phrases(through(encode_phrase(text), TWILIO_MULAW_8K), 8000)) == [text]


# --- streams of phrases --------------------------------------------------------------------------------------------

PHRASES = ["Good morning.", "Can you hear me?", "I need to change my booking to Friday, 3 pm.", "Thanks, bye!"]
GAPS = [0.35, 0.1, 0.25, 1.7, 0.4]  # before each phrase, and after the last


def conversation(rate: int, noise_dbfs: float | None = None) -> tuple[np.ndarray, list[DecodedPhrase]]:
    """Phrases back to back with gaps (the shortest 100 ms), and the events a perfect decoder reports."""
    parts, truth, t = [], [], 0
    for gap, text in zip(GAPS, [*PHRASES, None], strict=True):
        parts.append(silence(gap, rate))
        t += len(parts[-1])
        if text is None:
            break
        parts.append(encode_phrase(text, rate))
        truth.append(DecodedPhrase(text, t / rate, (t + len(parts[-1])) / rate))
        t += len(parts[-1])
    audio = np.concatenate(parts)
    if noise_dbfs is not None:
        noise = np.random.default_rng(7).standard_normal(len(audio)) * 10 ** (noise_dbfs / 20)
        audio = (audio + noise).astype(np.float32)
    return audio, truth


def assert_phrases_match(events: list, truth: list[DecodedPhrase], tolerance: float = 0.010) -> None:
    got = finals(events)
    assert [type(e) for e in got] == [DecodedPhrase] * len(truth), got
    for event, expected in zip(got, truth, strict=True):
        assert event.text == expected.text
        assert event.start == pytest.approx(expected.start, abs=tolerance)
        assert event.end == pytest.approx(expected.end, abs=tolerance)


def test_back_to_back_phrases_fed_in_20ms_mulaw_chunks() -> None:
    audio, truth = conversation(8000, noise_dbfs=-50)
    events = feed_in_chunks(PhraseDecoder(8000), through(audio, TWILIO_MULAW_8K), 160)
    assert_phrases_match(events, truth)


@pytest.mark.parametrize("rate", [16000, 24000])
def test_back_to_back_phrases_fed_in_20ms_chunks_at_other_rates(rate: int) -> None:
    audio, truth = conversation(rate, noise_dbfs=-50)
    events = feed_in_chunks(PhraseDecoder(rate), through(audio, AudioFormat("linear16", rate)), rate // 50)
    assert_phrases_match(events, truth)


def test_any_chunk_size_gives_the_same_events() -> None:
    audio, truth = conversation(8000)
    rng = np.random.default_rng(3)
    decoder, events, i = PhraseDecoder(8000), [], 0
    while i < len(audio):
        n = int(rng.choice([1, 7, 80, 333, 4000]))
        events += decoder.feed(audio[i : i + n])
        i += n
    events += decoder.flush()
    assert_phrases_match(events, truth, tolerance=0.0)
    assert_phrases_match(decode_phrases(audio, 8000), truth, tolerance=0.0)


def test_events_arrive_when_the_phrase_ends_not_at_flush() -> None:
    audio = np.concatenate([encode_phrase("hello there"), silence(0.02)])
    decoder = PhraseDecoder(8000)
    assert texts(decoder.feed(audio)) == ["hello there"]
    assert decoder.flush() == []


def test_silence_of_any_length_yields_nothing_and_keeps_time() -> None:
    decoder = PhraseDecoder(8000)
    for _ in range(3000):  # 60 s of 20 ms frames
        assert decoder.feed(silence(0.02)) == []
    events = decoder.feed(encode_phrase("still here")) + decoder.flush()
    assert events == [DecodedPhrase("still here", 60.0, 60.0 + phrase_duration("still here"))]


def test_progress_reports_growing_prefixes_then_the_phrase() -> None:
    decoder = PhraseDecoder(8000, progress=True)
    events = feed_in_chunks(decoder, encode_phrase("Hello world, 42"), 160)
    progress = [e for e in events if isinstance(e, PhraseProgress)]
    assert events[-1] == DecodedPhrase("Hello world, 42", 0.0, phrase_duration("Hello world, 42"))
    assert [p.text_so_far for p in progress][-1] == "Hello world, 42"
    assert len(progress) >= 10
    for earlier, later in itertools.pairwise(progress):
        assert later.text_so_far.startswith(earlier.text_so_far) and later.end > earlier.end
    assert all(p.start == 0.0 for p in progress)
    assert PhraseDecoder(8000).feed(encode_phrase("Hello world, 42")) == [events[-1]]  # off by default


# --- the text ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Café crème, s’il vous plaît", "Cafe creme, s'il vous plait"),
        ("“Quoted” — dashed – text…", '"Quoted" - dashed - text...'),
        ("tabs\tand\nnewlines   and  spaces ", "tabs and newlines and spaces"),
        ("emoji 😀 and ^ carets ~ gone", "emoji and carets - gone"),
        ("Straße [1] {2} a_b", "Strasse (1) (2) a-b"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalized
    assert normalize_text(normalized) == normalized


def test_decoded_text_is_normalize_text() -> None:
    raw = "  Zoë’s  naïve café — ½ price?\t€5 only!  "
    assert texts(decode_phrases(encode_phrase(raw), 8000)) == [normalize_text(raw)]


def test_too_long_text_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_phrase("a" * 1024)
    assert phrase_duration("a" * 1023) == pytest.approx((1023 + 7) * 0.060)


# --- mismatches and non-phrase audio -------------------------------------------------------------------------------


def test_16k_linear16_bytes_read_as_8k_mulaw_fail() -> None:
    data = formats.to_bytes(encode_phrase(SENTENCE, 16000), PCM_16K)
    assert_undecodable(decode_phrases(formats.from_bytes(data, TWILIO_MULAW_8K), 8000))


def test_mulaw_bytes_read_as_linear16_fail() -> None:
    data = formats.to_bytes(encode_phrase(SENTENCE), TWILIO_MULAW_8K)
    assert_undecodable(decode_phrases(formats.from_bytes(data, AudioFormat("linear16", 8000)), 8000))
    assert_undecodable(decode_phrases(formats.from_bytes(data + data, PCM_16K), 16000))


def test_16k_samples_fed_to_an_8k_decoder_fail() -> None:
    audio = np.concatenate([silence(0.2, 16000), encode_phrase(SENTENCE, 16000), silence(0.2, 16000)])
    events = decode_phrases(audio, 8000)
    assert_undecodable(events)
    # the whole stretch, played at half speed, is one undecodable event
    [event] = events
    assert event.start == pytest.approx(0.4, abs=0.02)
    assert event.end == pytest.approx(0.4 + 2 * phrase_duration(SENTENCE), abs=0.02)


def test_8k_samples_fed_to_a_16k_decoder_fail() -> None:
    audio = np.concatenate([silence(0.2), encode_phrase(SENTENCE), silence(0.2)])
    assert_undecodable(decode_phrases(audio, 16000))
    assert_undecodable(decode_phrases(audio, 24000))


@pytest.mark.parametrize("seed", range(5))
def test_white_noise_is_undecodable(seed: int) -> None:
    noise = (np.random.default_rng(seed).standard_normal(16000) * 0.1).astype(np.float32)
    [event] = decode_phrases(np.concatenate([silence(0.1), noise, silence(0.1)]), 8000)
    assert isinstance(event, UndecodableAudio) and "preamble" in event.reason
    assert event.start == pytest.approx(0.1, abs=0.011) and event.end == pytest.approx(2.1, abs=0.011)


def test_low_level_noise_alone_yields_nothing() -> None:
    noise = (np.random.default_rng(4).standard_normal(10 * 8000) * 10 ** (-50 / 20)).astype(np.float32)
    assert feed_in_chunks(PhraseDecoder(8000), through(noise, TWILIO_MULAW_8K), 160) == []


@pytest.mark.parametrize("hz", [150.0, 440.0, 1000.0])
def test_pure_tone_is_undecodable(hz: float) -> None:
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(16000) / 8000)).astype(np.float32)
    assert_undecodable(decode_phrases(tone, 8000))


def test_garbage_bytes_as_audio_are_undecodable() -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 8000, dtype=np.uint8).tobytes()
    assert_undecodable(decode_phrases(formats.from_bytes(garbage, TWILIO_MULAW_8K), 8000))


def test_decoder_carries_on_after_noise_and_a_tone() -> None:
    noise = (np.random.default_rng(2).standard_normal(6000) * 0.2).astype(np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000)).astype(np.float32)
    audio = np.concatenate([noise, silence(0.15), encode_phrase("first"), silence(0.1), tone, silence(0.1),
                            encode_phrase("second")])
    events = feed_in_chunks(PhraseDecoder(8000), through(audio, TWILIO_MULAW_8K), 160)
    assert [type(e) for e in events] == [UndecodableAudio, DecodedPhrase, UndecodableAudio, DecodedPhrase]
    assert texts(events) == ["first", "second"]


def test_clicks_shorter_than_50ms_are_ignored() -> None:
    click = np.full(80, 0.3, dtype=np.float32)
    assert decode_phrases(np.concatenate([silence(0.1), click, silence(0.5)]), 8000) == []


def test_phrase_cut_in_half_then_flush_is_undecodable() -> None:
    audio = encode_phrase(SENTENCE)
    half = audio[: len(audio) // 2]
    for events in (feed_in_chunks(PhraseDecoder(8000), half, 160), decode_phrases(half, 8000)):
        [event] = events
        assert isinstance(event, UndecodableAudio) and event.reason.startswith("phrase cut short")
        assert event.start == 0.0 and event.end == pytest.approx(len(half) / 8000, abs=0.001)


def test_phrase_cut_short_by_silence_then_the_next_phrase_decodes() -> None:
    audio = encode_phrase(SENTENCE)
    stream = np.concatenate([audio[: len(audio) // 3], silence(0.3), encode_phrase("next one")])
    events = decode_phrases(stream, 8000)
    assert [type(e) for e in events] == [UndecodableAudio, DecodedPhrase]
    assert events[0].reason.startswith("phrase cut short") and events[1].text == "next one"


def test_a_wrong_symbol_is_caught_by_the_checksum() -> None:
    symbols = pc._frame_symbols("checksum")
    for position in (2, 6, len(symbols) - 1):  # length field, payload, crc
        tampered = list(symbols)
        tampered[position] = (tampered[position] + 1) % 32
        events = decode_phrases(pc._synthesize(tampered), 8000)
        assert_undecodable(events)


def test_flush_ends_a_stream_and_time_continues() -> None:
    decoder = PhraseDecoder(16000)
    first = decoder.feed(encode_phrase("one", 16000)) + decoder.flush()
    second = decoder.feed(encode_phrase("two", 16000)) + decoder.flush()
    assert texts(first) == ["one"] and texts(second) == ["two"]
    assert second[0].start == pytest.approx(phrase_duration("one"), abs=0.001)


# --- WAV -----------------------------------------------------------------------------------------------------------


def test_wav_round_trip(tmp_path) -> None:
    audio = encode_phrase(SENTENCE, 16000)
    write_wav(tmp_path / "phrase.wav", audio, 16000)
    samples, rate = read_wav(tmp_path / "phrase.wav")
    assert rate == 16000 and samples.dtype == np.float32 and len(samples) == len(audio)
    assert np.max(np.abs(samples - audio)) < 1e-4
    assert texts(decode_phrases(samples, rate)) == [SENTENCE]


def test_wav_stereo_is_mixed_down(tmp_path) -> None:
    import wave

    left = np.array([1000, -2000, 3000], dtype="<i2")
    right = np.array([3000, 2000, -1000], dtype="<i2")
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(np.stack([left, right], axis=1).tobytes())
    samples, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 8000
    np.testing.assert_allclose(samples, np.array([2000, 0, 1000]) / 32768.0, atol=1e-6)
