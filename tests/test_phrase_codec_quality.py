"""How much of a phrase arrived intact: the decoder counts a recognised phrase's symbols and those it read clearly,
so lost or garbled stretches show as a share, not only as "undecodable"."""

from __future__ import annotations

import numpy as np

from harness.audio.phrase_codec import (
    SYMBOL_SAMPLES,
    DecodedPhrase,
    UndecodableAudio,
    decode_phrases,
    encode_phrase,
)

TEXT = "Sure, I can book a cleaning. Which day works for you?"
SILENCE = np.zeros(8000, dtype=np.float32)


def _decode(audio: np.ndarray) -> list[object]:
    return [e for e in decode_phrases(np.concatenate([SILENCE, audio, SILENCE]), 8000)
            if isinstance(e, DecodedPhrase | UndecodableAudio)]


def test_a_whole_phrase_has_every_symbol_clear() -> None:
    audio = encode_phrase(TEXT)
    [event] = _decode(audio)
    assert isinstance(event, DecodedPhrase)
    assert event.symbols == len(audio) // SYMBOL_SAMPLES


def test_lost_packets_lower_the_share_of_clear_symbols_in_proportion() -> None:
    audio = encode_phrase(TEXT).copy()
    symbols = len(audio) // SYMBOL_SAMPLES
    rng = np.random.default_rng(4)
    # 20 ms packets lost (concealed as silence), about 8 % of them, never in the header
    packets = np.arange(12, len(audio) // 160)
    for p in rng.choice(packets, size=len(packets) * 8 // 100, replace=False):
        audio[p * 160:(p + 1) * 160] = 0.0
    events = _decode(audio)
    assert not any(isinstance(e, DecodedPhrase) for e in events)
    damaged = next(e for e in events if isinstance(e, UndecodableAudio) and e.symbols)
    assert damaged.symbols == symbols
    share = damaged.clear_symbols / damaged.symbols
    assert 0.55 < share < 0.98, share  # a lost 20 ms packet blurs the 60 ms symbol it falls in


def test_a_phrase_cut_short_counts_what_never_arrived_as_unclear() -> None:
    audio = encode_phrase(TEXT)
    symbols = len(audio) // SYMBOL_SAMPLES
    half = (symbols // 2) * SYMBOL_SAMPLES
    [event] = _decode(audio[:half])
    assert isinstance(event, UndecodableAudio) and "cut short" in event.reason
    assert event.symbols == symbols
    assert abs(event.clear_symbols - symbols // 2) <= 2


def test_noise_is_not_a_phrase_and_counts_nothing() -> None:
    noise = np.random.default_rng(1).normal(0, 0.2, 16000).astype(np.float32)
    events = _decode(noise)
    assert events and all(isinstance(e, UndecodableAudio) and e.symbols == e.clear_symbols == 0 for e in events)
