"""What a person on the phone hears, on the playout timeline.

The :class:`Ear` is fed the audio the playout model says was played (``PlayedAudio.start`` is the exact time its first
byte played). It finds the audible stretches (short blocks above an energy threshold) and decodes the phrases in them.
It is sans-I/O and clock-free: every time it reports comes from the playout timeline, so a late event loop changes
nothing it measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.audio import formats
from harness.audio.phrase_codec import DecodedPhrase, PhraseDecoder, UndecodableAudio

_RATE = 8000
#: 5 ms blocks: onsets and gaps are located to within one block.
BLOCK_SAMPLES = 40
BLOCK_S = BLOCK_SAMPLES / _RATE
#: quieter than this is silence (comfort noise, μ-law idle patterns, dither)
AUDIBLE_DBFS = -45.0
#: a dip shorter than this inside speech is not a silence gap (zero crossings, plosive-like dips)
MERGE_S = 0.05
#: silence fed to the decoder for a break in the timeline, so phrases on both sides stay apart
_GAP_FILL_S = 0.3
#: audible audio is handed to the decoder in batches of this much (per-call overhead matters at 50 chunks/s per
#: call); silence flushes the batch at once, so a phrase is decoded as soon as it has ended
_DECODE_BATCH = int(0.2 * _RATE)
#: loud blocks closer than this (in blocks) belong to one audible stretch
_MERGE_BLOCKS = MERGE_S / BLOCK_S


@dataclass(frozen=True, slots=True)
class Audible:
    """A stretch of audible agent audio, [start, end) on the playout timeline."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Heard:
    """A decoded phrase (``text``) or undecodable audio (``text`` is None, ``reason`` says why)."""

    text: str | None
    reason: str
    at: float  # playout time when it was recognised
    symbols: int = 0  # the phrase's symbols, when a phrase was recognised (see UndecodableAudio)
    clear_symbols: int = 0


class Ear:
    def __init__(self, *, audible_dbfs: float = AUDIBLE_DBFS, decode: bool = True) -> None:
        amplitude = 10 ** (audible_dbfs / 20)
        self._threshold = amplitude**2 * BLOCK_SAMPLES  # energy per block
        # per μ-law byte: 1 if that one sample is louder than the threshold. A chunk with no such sample cannot
        # hold an audible block (a block's RMS is at most its peak), so silence is recognised at C speed.
        levels = formats.from_bytes(bytes(range(256)), formats.TWILIO_MULAW_8K)
        self._loud_table = bytes(int(abs(level) > amplitude) for level in levels)
        self._decoder = PhraseDecoder(_RATE) if decode else None
        self._open: Audible | None = None
        self._timeline_end: float | None = None
        self._quiet_fed = _GAP_FILL_S  # seconds of silence fed to the decoder since the last sound
        self._batch: list[np.ndarray] = []
        self._batched = 0
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_start = 0.0

    def hear(self, start: float, mulaw: bytes) -> tuple[list[Audible], list[Heard]]:
        """Audio that played from ``start``. Returns audible stretches that ended and phrases recognised."""
        closed: list[Audible] = []
        heard: list[Heard] = []
        gap = 0.0 if self._timeline_end is None else max(0.0, start - self._timeline_end)
        self._timeline_end = start + len(mulaw) / _RATE
        if b"\x01" not in mulaw.translate(self._loud_table):
            # Silence: no stretch can start, and the decoder only needs enough of it to keep phrases apart.
            self._pending = self._pending[:0]
            self._feed_silence(heard, gap + len(mulaw) / _RATE, self._timeline_end)
            return closed, heard
        if gap > 1e-6:
            self._feed_silence(heard, gap, start)  # a break in the timeline (underrun) is silence too
        self._quiet_fed = 0.0
        samples = formats.from_bytes(mulaw, formats.TWILIO_MULAW_8K)
        if self._decoder is not None:
            self._batch.append(samples)
            self._batched += samples.size
            if self._batched >= _DECODE_BATCH:
                self._flush_batch(heard, self._timeline_end)
        # energy per 5 ms block, carrying a partial block over to the next call
        if self._pending.size and abs(self._pending_start + self._pending.size / _RATE - start) > 1e-6:
            self._pending = self._pending[:0]
        if not self._pending.size:
            self._pending_start = start
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = buffer.size // BLOCK_SAMPLES * BLOCK_SAMPLES
        if whole:
            blocks = buffer[:whole].reshape(-1, BLOCK_SAMPLES)
            energy = np.einsum("ij,ij->i", blocks, blocks)
            loud = np.flatnonzero(energy > self._threshold)
            if loud.size:
                # runs of loud blocks that merge anyway: one _extend per run instead of one per 5 ms block
                breaks = np.flatnonzero(np.diff(loud) - 1 >= _MERGE_BLOCKS - 1e-9)
                firsts = [int(loud[0]), *(int(loud[b + 1]) for b in breaks)]
                lasts = [*(int(loud[b]) for b in breaks), int(loud[-1])]
                for first, last in zip(firsts, lasts, strict=True):
                    closed += self._extend(self._pending_start + first * BLOCK_S,
                                           self._pending_start + (last + 1) * BLOCK_S)
        self._pending = buffer[whole:].copy()
        self._pending_start += whole / _RATE
        return closed, heard

    def silence_until(self, now: float) -> list[Heard]:
        """Nothing is playing up to ``now``: the decoder hears that silence (it ends the phrase it was in)."""
        heard: list[Heard] = []
        if self._timeline_end is not None and now > self._timeline_end and self._quiet_fed < _GAP_FILL_S:
            self._feed_silence(heard, now - self._timeline_end, now)
            self._timeline_end = now
        return heard

    def _flush_batch(self, heard: list[Heard], at: float) -> None:
        if self._batch:
            samples = self._batch[0] if len(self._batch) == 1 else np.concatenate(self._batch)
            self._batch = []
            self._batched = 0
            heard += self._decode(samples, at)

    def _feed_silence(self, heard: list[Heard], seconds: float, at: float) -> None:
        self._flush_batch(heard, at)
        if self._decoder is None or self._quiet_fed >= _GAP_FILL_S:
            return
        take = min(seconds, _GAP_FILL_S - self._quiet_fed)
        self._quiet_fed += take
        heard += self._decode(np.zeros(round(take * _RATE), dtype=np.float32), at)

    def close_before(self, now: float) -> list[Audible]:
        """Close the open stretch if nothing audible can extend it any more (silence since, up to ``now``)."""
        if self._open is not None and now - self._open.end >= MERGE_S:
            done, self._open = self._open, None
            return [done]
        return []

    def flush(self) -> tuple[list[Audible], list[Heard]]:
        heard: list[Heard] = []
        if self._decoder is not None:
            end = self._timeline_end or 0.0
            self._flush_batch(heard, end)
            heard += [h for h in (self._event(e, end) for e in self._decoder.flush()) if h is not None]
        closed = [self._open] if self._open is not None else []
        self._open = None
        return closed, heard

    def interrupt(self) -> tuple[list[Heard], int]:
        """A ``clear`` cut the agent's audio: the half-heard phrase was cut short, it is not garbled audio.

        Returns the phrases that had been heard whole and the number of phrases cut; the decoder starts afresh.
        """
        if self._decoder is None:
            return [], 0
        whole: list[Heard] = []
        self._flush_batch(whole, self._timeline_end or 0.0)
        events = self._decoder.flush()
        self._decoder = PhraseDecoder(_RATE)
        self._quiet_fed = _GAP_FILL_S
        heard = [h for h in whole if h.text is not None]
        heard += [Heard(e.text, "", e.end, e.symbols, e.symbols) for e in events if isinstance(e, DecodedPhrase)]
        cut = sum(1 for e in events if isinstance(e, UndecodableAudio)) + sum(1 for h in whole if h.text is None)
        return heard, cut

    @property
    def open_stretch(self) -> Audible | None:
        return self._open

    # --- internals ----------------------------------------------------------------------------------------------------

    def _extend(self, start: float, end: float) -> list[Audible]:
        if self._open is not None and start - self._open.end < MERGE_S:
            self._open = Audible(self._open.start, end)
            return []
        done = [self._open] if self._open is not None else []
        self._open = Audible(start, end)
        return done

    def _decode(self, samples: np.ndarray, at: float) -> list[Heard]:
        assert self._decoder is not None
        out = [self._event(e, at) for e in self._decoder.feed(samples)]
        return [h for h in out if h is not None]

    @staticmethod
    def _event(event: object, at: float) -> Heard | None:
        if isinstance(event, DecodedPhrase):
            return Heard(event.text, "", at, event.symbols, event.symbols)
        if isinstance(event, UndecodableAudio):
            return Heard(None, event.reason, at, event.symbols, event.clear_symbols)
        return None
