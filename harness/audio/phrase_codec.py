"""The phrase codec: text carried in audio that sounds like a voice, so fakes can "hear" what was said.

Why it exists. Simulated callers speak *phrases*; a fake STT server must recover the caller's text from the audio
it receives, and the caller must recover what the agent said from the audio a fake TTS server produced. Real
runtimes put a neural VAD (Silero, in Pipecat and LiveKit agents) in front of STT, and such VADs give a pure tone a
speech probability near 0 (see shared/protocols/twilio-media-streams.md, section 5). So a phrase must look like a
voice to a VAD and still carry its text exactly through the telephone path: G.711 μ-law at 8 kHz, resampling to
16 kHz and back, any gain.

The voice. Each symbol is 60 ms of a voiced sound: a harmonic series with a glottal-like falling tilt over a
fundamental F0 that is the symbol (32 values, log-spaced 100..320 Hz), passed through three formant resonators whose
vowel moves a -> ɪ -> ɔ -> ɛ -> ʊ once per syllable, under a 5 Hz syllable envelope that dips to 35 % but never to
zero inside a phrase. Silero scores this as speech; it scores the same harmonics under a *fixed* vowel as noise,
which is why the vowel moves. Phrases start and end with 3 ms ramps, so audibility begins and ends within a few
milliseconds of the phrase's true edges (callers time latencies and gaps from audibility).

The code. A symbol is read from the magnitude spectrum of its centre 48 ms: log magnitude, minus its own moving
average across 480 Hz (this "whitening" removes the formants and the channel's colouring and keeps the harmonic
comb), compared by cosine similarity with the 32 F0 combs. Neighbouring F0s differ by 3.8 %, which harmonics
between 1.5 and 3 kHz separate by 55-115 Hz, more than a 48 ms window's resolution. Text maps to symbols through
a 30-letter direct alphabet plus CAP and ESC shifts; a frame is ``preamble(2) length(2) payload(n) crc15(3)``
symbols.

Mismatch is a feature. Audio read under the wrong encoding (μ-law as linear16 or back) is noise; audio at the wrong
rate has every F0 and every symbol length scaled by the rate ratio. Either way the preamble is not found or a
symbol matches no comb well or the CRC fails, and the decoder reports :class:`UndecodableAudio`: never a wrong
text. That is how an encoding mismatch becomes visible in a run.

The decoder is sans-I/O and streaming: no clock, no I/O; time is the count of samples fed. Silence costs one dot
product per chunk. A phrase's symbols are classified in one numpy batch once its length field is known.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import Enum
from functools import cache

import numpy as np

from harness.audio.formats import StreamResampler, resample

CODEC_SAMPLE_RATE = 8000

# --- the voice -----------------------------------------------------------------------------------------------------

#: one symbol lasts 60 ms: one lower-case character, so about 16 characters per second, a brisk talker's pace
SYMBOL_SAMPLES = 480
SYMBOL_SECONDS = SYMBOL_SAMPLES / CODEC_SAMPLE_RATE
#: the 32 fundamentals, one per symbol value: a human voice range, log-spaced (neighbours 3.8 % apart)
F0_HZ = np.geomspace(100.0, 320.0, 32)
#: harmonics fade out between these (Hz): μ-law and soxr's 8 kHz passband (about 3.65 kHz) keep everything below
_HARMONIC_FADE = (3200.0, 3600.0)
_MAX_HARMONICS = int(_HARMONIC_FADE[1] // F0_HZ[0])
#: F0 glides between symbols over 6 ms (phase stays continuous; a jump would click)
_GLIDE_SAMPLES = 48
#: edge ramps: short, so the audible onset/offset is within 3 ms of the true one
_EDGE_RAMP_SAMPLES = 24
SYLLABLE_RATE_HZ = 5.0
#: envelope floor inside a phrase (0.35 = -9 dB): a syllable rhythm, never a pause
_ENVELOPE_FLOOR = 0.35
#: vowel formants (F1, F2, F3 in Hz, Peterson & Barney averages), one vowel per syllable, front and back in turn:
#: a, ɪ, ɔ, ɛ, ʊ. Close vowels (i, u) were tried and dropped: their low F1 leaves high F0s with little energy at the
#: envelope's troughs, where neighbouring symbols were then confused at 17 dB SNR
_VOWELS = np.array(
    [[730.0, 1090.0, 2440.0], [390.0, 1990.0, 2550.0], [570.0, 840.0, 2410.0], [530.0, 1840.0, 2480.0],
     [440.0, 1020.0, 2240.0]]
)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
#: the synthesiser's control rate: harmonic amplitudes are computed every 5 ms and interpolated between
_CONTROL_SAMPLES = 40
_PEAK = 0.5
#: source spectrum: harmonic k has amplitude 1/k**tilt. 1.0 (-6 dB/octave) is the textbook glottal pulse plus lip
#: radiation; 0.7 is a brighter voice that Silero scores about as well and whose high harmonics, which tell
#: neighbouring F0s apart, stay above noise 5 dB longer
_SOURCE_TILT = 0.7

# --- the text ------------------------------------------------------------------------------------------------------

_DIRECT = " abcdefghijklmnopqrstuvwxyz.,?"
_CAP = 30
_ESC = 31
_ESCAPED = "0123456789'!-:;&/%$@\"()+=*#"
_DIRECT_INDEX = {c: i for i, c in enumerate(_DIRECT)}
_ESCAPED_INDEX = {c: i for i, c in enumerate(_ESCAPED)}
#: characters outside the alphabet that have an obvious stand-in (others are dropped)
_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "_": "-", "~": "-", "[": "(", "]": ")", "{": "(", "}": ")", "|": "/", "\\": "/", "\u00a1": "!",
    "\u00bf": "?", "\u00df": "ss", "\u00e6": "ae", "\u00c6": "Ae", "\u0153": "oe", "\u0152": "Oe", "\u00f8": "o",
    "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u00fe": "th", "\u00de": "Th",
    "\u00f0": "d", "\u00d0": "D", "\u0131": "i", "\u20ac": "EUR", "\u00a3": "GBP", "\u2044": "/",
}

# --- the frame -----------------------------------------------------------------------------------------------------

#: first symbol has the highest F0 (3 ms periods), so the amplitude onset is sharp; the pair never maps onto
#: itself under a 2x rate error
PREAMBLE = (31, 9)
_HEADER_SYMBOLS = 4  # preamble + 10-bit length
#: a 15-bit CRC (3 symbols). 10 bits would let one damaged phrase in 1024 through as a wrong text; a load test with
#: packet loss damages thousands of phrases, so the odds must be far lower
_CRC_SYMBOLS = 3
#: the length field counts payload symbols: 10 bits, so a phrase holds at most 1023 (about 61 s of speech)
MAX_PAYLOAD_SYMBOLS = 1023
_CRC_BITS = 5 * _CRC_SYMBOLS
_CRC_POLY = 0x4599  # CRC-15/CAN: x^15 + x^14 + x^10 + x^8 + x^7 + x^4 + x^3 + 1
_CRC_INIT = 0x7FFF  # not zero, so leading zero symbols count


# --- public events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedPhrase:
    """A phrase whose checksum matched. Times are seconds since the first sample fed to the decoder."""

    text: str
    start: float
    end: float
    # the frame's symbols, every one read clearly (a measurement beside the result: not part of equality)
    symbols: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class UndecodableAudio:
    """Energetic audio that is not a phrase: noise, a tone, a phrase cut short, or a format/rate mismatch.

    When it began as a phrase whose length field was read, ``symbols`` is how many symbols that phrase has and
    ``clear_symbols`` how many of them were read clearly (a comb matched above :data:`MIN_SYMBOL_SCORE`); missing
    symbols of a phrase cut short count as unclear. Both are 0 when no phrase was recognised (noise, a mismatch):
    a measure of how much of the audio arrived intact, not of which text it carried."""

    start: float
    end: float
    reason: str
    symbols: int = field(default=0, compare=False)
    clear_symbols: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class PhraseProgress:
    """Interim result: the text of the symbols heard so far (not yet checked; the CRC comes last)."""

    text_so_far: str
    start: float
    end: float


PhraseEvent = DecodedPhrase | UndecodableAudio | PhraseProgress


# --- text <-> symbols ----------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """The text a decoder will report for ``encode_phrase(text)``.

    Accents are stripped (é -> e), typographic quotes and dashes become ASCII, a few letters and symbols get a
    stand-in (ß -> ss, € -> EUR, [ -> (), other characters outside the alphabet are dropped, and whitespace runs
    collapse to one space with none at the ends. Callers compare ``normalize_text(expected)`` with decoded text.
    """
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue
        ch = _REPLACEMENTS.get(ch, ch)
        for c in ch:
            if c.isspace():
                out.append(" ")
            elif c in _DIRECT_INDEX or c in _ESCAPED_INDEX or ("A" <= c <= "Z"):
                out.append(c)
    return " ".join("".join(out).split())


def _text_to_symbols(normalized: str) -> list[int]:
    symbols: list[int] = []
    for c in normalized:
        if c in _DIRECT_INDEX:
            symbols.append(_DIRECT_INDEX[c])
        elif "A" <= c <= "Z":
            symbols += [_CAP, _DIRECT_INDEX[c.lower()]]
        else:
            symbols += [_ESC, _ESCAPED_INDEX[c]]
    return symbols


def _symbols_to_text(symbols: list[int] | np.ndarray, *, partial: bool = False) -> str | None:
    """Payload symbols -> text; None if the sequence breaks the shift rules (a sign of a wrong decode).

    With ``partial`` a trailing shift is allowed (its character has not arrived yet).
    """
    out: list[str] = []
    shift = None
    for s in (int(v) for v in symbols):
        if shift == _CAP:
            if not 1 <= s <= 26:
                return None
            out.append(_DIRECT[s].upper())
            shift = None
        elif shift == _ESC:
            if s >= len(_ESCAPED):
                return None
            out.append(_ESCAPED[s])
            shift = None
        elif s in (_CAP, _ESC):
            shift = s
        else:
            out.append(_DIRECT[s])
    if shift is not None and not partial:
        return None
    return "".join(out)


@cache
def _crc_table() -> tuple[int, ...]:
    # processes 5 bits (one symbol) per step, MSB first
    top, mask = 1 << (_CRC_BITS - 1), (1 << _CRC_BITS) - 1
    table = []
    for value in range(32):
        crc = value << (_CRC_BITS - 5)
        for _ in range(5):
            crc = (((crc << 1) ^ _CRC_POLY) if crc & top else (crc << 1)) & mask
        table.append(crc)
    return tuple(table)


def _crc(symbols: list[int] | np.ndarray) -> int:
    """CRC-15 of a symbol sequence, 5 bits per symbol."""
    table, mask, shift = _crc_table(), (1 << _CRC_BITS) - 1, _CRC_BITS - 5
    crc = _CRC_INIT
    for s in symbols:
        crc = ((crc << 5) & mask) ^ table[((crc >> shift) ^ int(s)) & 0x1F]
    return crc


def _crc_symbols(crc: int) -> list[int]:
    return [(crc >> (5 * i)) & 0x1F for i in reversed(range(_CRC_SYMBOLS))]


def _frame_symbols(text: str) -> list[int]:
    payload = _text_to_symbols(normalize_text(text))
    if len(payload) > MAX_PAYLOAD_SYMBOLS:
        raise ValueError(
            f"phrase too long: {len(payload)} symbols, at most {MAX_PAYLOAD_SYMBOLS} fit its length field;"
            " split the text into several phrases"
        )
    body = [len(payload) >> 5, len(payload) & 0x1F, *payload]
    return [*PREAMBLE, *body, *_crc_symbols(_crc(body))]


# --- synthesis -----------------------------------------------------------------------------------------------------


def _formants_at(t: np.ndarray) -> np.ndarray:
    """(len(t), 3) formant frequencies: vowel j peaks at t = j / rate, cosine cross-fade in between."""
    pos = t * SYLLABLE_RATE_HZ
    base = np.floor(pos)
    i0 = base.astype(np.int64) % len(_VOWELS)
    i1 = (i0 + 1) % len(_VOWELS)
    w = (0.5 - 0.5 * np.cos(np.pi * (pos - base)))[:, None]
    return _VOWELS[i0] * (1.0 - w) + _VOWELS[i1] * w


def _harmonic_weights(f0: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """(K, len(f0)) complex harmonic amplitudes: tilt x formant resonators x band fade, at unit power."""
    k = np.arange(1, _MAX_HARMONICS + 1, dtype=np.float64)[:, None]
    fk = k * f0[None, :]
    h = np.ones_like(fk, dtype=np.complex128)
    for j in range(3):
        fj = formants[:, j][None, :]
        h *= fj**2 / (fj**2 - fk**2 + 1j * _FORMANT_BANDWIDTHS[j] * fk)
    lo, hi = _HARMONIC_FADE
    fade = np.clip((hi - fk) / (hi - lo), 0.0, 1.0)
    w = h * fade / k**_SOURCE_TILT
    power = np.sum(np.abs(w) ** 2, axis=0) / 2.0
    return w / np.sqrt(power)[None, :]


def _smoothed_log_f0(symbols: list[int]) -> np.ndarray:
    log_f0 = np.repeat(np.log(F0_HZ[np.asarray(symbols)]), SYMBOL_SAMPLES)
    g = _GLIDE_SAMPLES
    padded = np.pad(log_f0, (g // 2, g - g // 2), mode="edge")
    c = np.concatenate([[0.0], np.cumsum(padded)])
    return (c[g:-1] - c[: -g - 1]) / g


def _synthesize(symbols: list[int]) -> np.ndarray:
    """Symbols -> float32 voice at 8 kHz, peak 0.5."""
    n = len(symbols) * SYMBOL_SAMPLES
    f0 = np.exp(_smoothed_log_f0(symbols))
    phase = 2.0 * np.pi * (np.cumsum(f0) - f0[0]) / CODEC_SAMPLE_RATE
    # harmonic amplitudes on the 5 ms control grid (one point past the end, for interpolation)
    ctrl_idx = np.arange(0, n + _CONTROL_SAMPLES, _CONTROL_SAMPLES)
    ctrl_t = ctrl_idx / CODEC_SAMPLE_RATE
    weights = _harmonic_weights(f0[np.minimum(ctrl_idx, n - 1)], _formants_at(ctrl_t)).astype(np.complex64)
    out = np.empty(n, dtype=np.float32)
    ramp_up = np.arange(_CONTROL_SAMPLES, dtype=np.float32) / _CONTROL_SAMPLES
    block = 50 * _CONTROL_SAMPLES  # bounded memory for long phrases; n and block are whole control periods
    for a in range(0, n, block):
        b = min(n, a + block)
        p0, p1 = a // _CONTROL_SAMPLES, b // _CONTROL_SAMPLES
        # z^k row by row (contiguous multiplies; np.cumprod across rows is several times slower)
        zk = np.empty((_MAX_HARMONICS, b - a), dtype=np.complex64)
        zk[0] = np.exp(1j * phase[a:b])
        for k in range(1, _MAX_HARMONICS):
            np.multiply(zk[k - 1], zk[0], out=zk[k])
        per_period = zk.reshape(_MAX_HARMONICS, p1 - p0, _CONTROL_SAMPLES).transpose(1, 0, 2)
        # sum_k w_k z^k with the weights at both ends of each control period, then interpolate linearly
        at_start = np.matmul(weights[:, p0:p1].T[:, None, :], per_period)[:, 0]
        at_end = np.matmul(weights[:, p0 + 1 : p1 + 1].T[:, None, :], per_period)[:, 0]
        out[a:b] = (at_start + (at_end - at_start) * ramp_up).imag.reshape(-1)
    t = np.arange(n) / CODEC_SAMPLE_RATE
    out *= (1.0 - (1.0 - _ENVELOPE_FLOOR) * (0.5 - 0.5 * np.cos(2.0 * np.pi * SYLLABLE_RATE_HZ * t))).astype(
        np.float32
    )
    ramp = np.linspace(0.0, 1.0, _EDGE_RAMP_SAMPLES, endpoint=False, dtype=np.float32)
    out[:_EDGE_RAMP_SAMPLES] *= ramp
    out[-_EDGE_RAMP_SAMPLES:] *= ramp[::-1]
    out *= np.float32(_PEAK / float(np.max(np.abs(out))))
    return out


def encode_phrase(text: str, sample_rate: int = CODEC_SAMPLE_RATE) -> np.ndarray:
    """``text`` -> float32 voice samples at ``sample_rate``, peak 0.5, no leading or trailing silence.

    The voice is synthesised at 8 kHz (all of it lies below 3.6 kHz) and resampled, so every rate carries the same
    signal. The text is normalised first (see :func:`normalize_text`). Raises ValueError past 1023 symbols.
    """
    audio = _synthesize(_frame_symbols(text))
    if sample_rate != CODEC_SAMPLE_RATE:
        audio = resample(audio, CODEC_SAMPLE_RATE, sample_rate)
    return audio


def phrase_duration(text: str) -> float:
    """Seconds of ``encode_phrase(text)``: 60 ms per symbol, 7 symbols of framing."""
    return len(_frame_symbols(text)) * SYMBOL_SAMPLES / CODEC_SAMPLE_RATE


# --- analysis ------------------------------------------------------------------------------------------------------

#: analysis window: the centre 48 ms of a symbol, clear of the F0 glides at its edges
_WINDOW = 384
_WINDOW_OFFSET = (SYMBOL_SAMPLES - _WINDOW) // 2
_NFFT = 1024
#: the band compared: from below the lowest F0 to 3 kHz (neighbouring F0s are 115 Hz apart there; higher bins add
#: more noise than resolution, and soxr's 8 kHz passband ends at 3.65 kHz)
_BAND = (int(90 * _NFFT / CODEC_SAMPLE_RATE), int(3000 * _NFFT / CODEC_SAMPLE_RATE))
#: whitening: subtract the log spectrum's moving average over 61 bins (480 Hz, wider than any harmonic spacing)
_WHITEN_BINS = 61
#: log floor relative to the window's peak bin (-40 dB): deeper valleys between harmonics are μ-law and line noise,
#: and letting them count costs more than it resolves
_LOG_FLOOR = 1e-2
#: a symbol's best cosine score must reach this. Clean, μ-law, resampled and -20 dB voice scores >= 0.65, voice
#: with white noise 20 dB down >= 0.5; noise, tones and mismatched audio score <= 0.45 (and no better than 0.3 on
#: average). The header is held to a stricter bar: it decides whether a stretch is a phrase at all.
MIN_HEADER_SCORE = 0.5
MIN_SYMBOL_SCORE = 0.4


def _spectral_features(windows: np.ndarray) -> np.ndarray:
    """(n, _WINDOW) samples -> (n, bins) whitened, unit-norm log spectra."""
    mag = np.abs(np.fft.rfft(windows * _hann(), _NFFT, axis=1))
    lo, hi = _BAND
    mag /= np.max(mag[:, lo:hi], axis=1, keepdims=True) + 1e-20
    log_mag = np.log(mag + _LOG_FLOOR)
    half = _WHITEN_BINS // 2
    padded = np.pad(log_mag, ((0, 0), (half + 1, half)), mode="edge")
    c = np.cumsum(padded, axis=1)
    moving_avg = (c[:, _WHITEN_BINS:] - c[:, :-_WHITEN_BINS]) / _WHITEN_BINS
    feat = (log_mag - moving_avg)[:, lo:hi]
    feat -= feat.mean(axis=1, keepdims=True)
    return feat / (np.linalg.norm(feat, axis=1, keepdims=True) + 1e-20)


@cache
def _hann() -> np.ndarray:
    return np.hanning(_WINDOW).astype(np.float32)


@cache
def _comb_templates() -> np.ndarray:
    """(32, bins) features of ideal harmonic combs, one per F0: what each symbol looks like after whitening."""
    t = np.arange(_WINDOW) / CODEC_SAMPLE_RATE
    combs = np.zeros((len(F0_HZ), _WINDOW))
    lo, hi = _HARMONIC_FADE
    for i, f0 in enumerate(F0_HZ):
        for k in range(1, _MAX_HARMONICS + 1):
            fade = min(1.0, max(0.0, (hi - k * f0) / (hi - lo)))
            if fade > 0:
                combs[i] += fade / k * np.sin(2 * np.pi * k * f0 * t + np.pi * k * k / _MAX_HARMONICS)
    return _spectral_features(combs)


def _classify(x: np.ndarray, symbol_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbols starting at ``symbol_starts`` in ``x`` (8 kHz) -> (values, best scores), in one batch."""
    idx = np.asarray(symbol_starts)[:, None] + _WINDOW_OFFSET + np.arange(_WINDOW)[None, :]
    scores = _spectral_features(x[idx]) @ _comb_templates().T
    best = np.argmax(scores, axis=1)
    return best, scores[np.arange(len(best)), best]


@cache
def _preamble_waveform() -> np.ndarray:
    """The first two symbols of every phrase (up to the glide into the length field): the alignment template."""
    audio = _synthesize([*PREAMBLE, 0])
    return audio[: 2 * SYMBOL_SAMPLES - _GLIDE_SAMPLES].astype(np.float64)


# --- the streaming decoder -----------------------------------------------------------------------------------------

#: 10 ms energy frames (every F0 period fits in one)
_FRAME = 80
#: a frame is active above -45 dBFS RMS: a phrase's onset at -20 dB is 7 dB above, -50 dBFS noise 5 dB below
#: (inside a phrase, silence is judged relative to its preamble instead: its syllable troughs may dip lower)
ACTIVE_RMS = 10 ** (-45 / 20)
#: 50 ms of inactive frames end an energetic stretch (phrases are separated by at least 100 ms)
_GAP_FRAMES = 5
#: energetic stretches shorter than this are clicks, not speech: they are not reported
MIN_UNDECODABLE_SECONDS = 0.05
#: inside a phrase, "silent" means 20 dB below its preamble as well as below ACTIVE_RMS
_INNER_SILENCE_RATIO = 0.1
#: the alignment search around the amplitude onset, in samples (the first symbol's period is 3 ms)
_ALIGN_BEFORE = 48
_ALIGN_AFTER = 24
#: history kept while idle, for the onset search
_IDLE_HISTORY = 2 * _FRAME


class _State(Enum):
    IDLE = "idle"  # silence: one dot product per chunk
    ONSET = "onset"  # energy seen: waiting for the header (preamble + length)
    PHRASE = "phrase"  # header valid: waiting for the rest, watching for a cut
    GARBAGE = "garbage"  # not a phrase: waiting for the stretch to end


class _Samples:
    """A growable buffer of 8 kHz samples addressed by absolute sample index; old samples can be dropped."""

    def __init__(self) -> None:
        self._data = np.zeros(8192, dtype=np.float32)
        self.base = 0  # absolute index of _data[0]
        self._len = 0

    @property
    def end(self) -> int:
        return self.base + self._len

    def append(self, x: np.ndarray) -> None:
        if self._len + len(x) > len(self._data):
            grown = np.zeros(max(2 * len(self._data), self._len + len(x)), dtype=np.float32)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len : self._len + len(x)] = x
        self._len += len(x)

    def view(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b) (absolute); the part before ``base`` (already dropped) reads as silence."""
        a_rel, b_rel = a - self.base, min(b, self.end) - self.base
        if a_rel >= 0:
            return self._data[a_rel:b_rel]
        return np.concatenate([np.zeros(-a_rel, dtype=np.float32), self._data[: max(b_rel, 0)]])

    def drop_before(self, a: int) -> None:
        k = min(max(a - self.base, 0), self._len)
        if k == 0:
            return
        remaining = self._len - k
        if len(self._data) > 8192 and remaining < len(self._data) // 8:  # give back the memory of a long phrase
            kept = np.zeros(max(8192, 2 * remaining), dtype=np.float32)
            kept[:remaining] = self._data[k : self._len]
            self._data = kept
        else:
            self._data[:remaining] = self._data[k : self._len]
        self._len -= k
        self.base += k


#: symbols classified together while a phrase plays (a batch costs little more than one symbol)
_CLASSIFY_BATCH = 4


class PhraseDecoder:
    """Streaming phrase decoder for one direction of one call; feed it what was heard, in chunks of any size.

    Contract: every energetic stretch of audio yields exactly one final event, a :class:`DecodedPhrase` (the CRC
    matched) or an :class:`UndecodableAudio` (it did not, or no phrase started there), except clicks shorter than
    50 ms, which are ignored. With ``progress``, :class:`PhraseProgress` events report the text heard so far inside
    a phrase. Times are seconds since the first sample fed. Samples are float32 in [-1, 1] at ``sample_rate``;
    other rates are resampled to 8 kHz internally (soxr, delay-compensated, so times are unchanged).

    Limits: a frame is active above -45 dBFS RMS, so a phrase is heard down to 28 dB below its encoded level (peak
    about -34 dBFS; quieter is silence to the decoder) and steady background noise must stay below -45 dBFS.
    Phrases decode reliably down to about 17 dB SNR against white noise, below which they come out as
    UndecodableAudio; clipping does not hurt. Events for input at other rates than 8 kHz come up to about 100 ms
    later than at 8 kHz (soxr's streaming resampler works in blocks); their times are exact all the same.
    """

    def __init__(self, sample_rate: int = CODEC_SAMPLE_RATE, *, progress: bool = False) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.progress = progress
        self._resampler = StreamResampler(sample_rate, CODEC_SAMPLE_RATE)
        self._buf = _Samples()
        self._state = _State.IDLE
        self._scan = 0  # next energy frame to look at (absolute 8 kHz index)
        self._floor = 0  # end of the last phrase: an onset search never looks before it
        self._onset = 0  # coarse onset (start of the first active frame)
        self._start = 0  # aligned phrase start / start of a garbage stretch
        self._end = 0  # phrase end, from the length field
        self._symbols: list[int] = []  # symbols decoded so far in this phrase
        self._scores: list[float] = []  # their match scores, from the first symbol after the header
        self._reason = ""
        self._garbage_symbols = (0, 0)  # (symbols, clear) of the phrase a garbage stretch began as
        self._last_active_end = 0
        self._quiet_frames = 0
        self._quiet_rms = ACTIVE_RMS
        self._progress_text = ""

    # -- input ------------------------------------------------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> list[PhraseEvent]:
        """Audio heard; returns the events it completes."""
        x = self._resampler.process(np.asarray(samples, dtype=np.float32).reshape(-1))
        if len(x):
            self._buf.append(x)
        return self._advance(final=False)

    def flush(self) -> list[PhraseEvent]:
        """End of stream: a phrase cut short or an open stretch of noise is reported as UndecodableAudio.

        The decoder can be fed again afterwards; times continue from the end of this stream.
        """
        if self._resampler.from_rate != CODEC_SAMPLE_RATE:
            tail = self._resampler.process(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                self._buf.append(tail)
            self._resampler = StreamResampler(self.sample_rate, CODEC_SAMPLE_RATE)
        events = self._advance(final=True)
        self._state = _State.IDLE
        self._scan = self._floor = self._buf.end
        self._buf.drop_before(self._buf.end - _IDLE_HISTORY)
        return events

    # -- the state machine ------------------------------------------------------------------------------------------

    def _advance(self, final: bool) -> list[PhraseEvent]:
        events: list[PhraseEvent] = []
        while True:
            before = (self._state, self._scan)
            if self._state is _State.IDLE:
                self._idle(final)
            elif self._state is _State.ONSET:
                self._header(events, final)
            elif self._state is _State.PHRASE:
                self._phrase(events, final)
            else:
                self._garbage(events, final)
            if (self._state, self._scan) == before:
                return events

    def _frame_rms(self, a: int, n_frames: int) -> np.ndarray:
        frames = self._buf.view(a, a + n_frames * _FRAME).reshape(n_frames, _FRAME)
        return np.sqrt(np.einsum("ij,ij->i", frames, frames) / _FRAME)

    def _idle(self, final: bool) -> None:
        # at most 1 s per step: a long buffer fed at once is scanned once, not once per phrase in it
        n_frames = min((self._buf.end - self._scan) // _FRAME, CODEC_SAMPLE_RATE // _FRAME)
        if n_frames == 0:
            return
        seg = self._buf.view(self._scan, self._scan + n_frames * _FRAME)
        # silence fast path: no frame can reach ACTIVE_RMS if the whole chunk's energy is below one frame's worth
        if float(np.dot(seg, seg)) >= ACTIVE_RMS**2 * _FRAME:
            active = np.flatnonzero(self._frame_rms(self._scan, n_frames) >= ACTIVE_RMS)
            if len(active):
                self._onset = self._scan + int(active[0]) * _FRAME
                self._scan = self._onset
                self._state = _State.ONSET
                return
        self._scan += n_frames * _FRAME
        self._buf.drop_before(self._scan - _IDLE_HISTORY)

    def _amplitude_onset(self) -> int:
        """First sample reaching a quarter of the onset's local peak: within a period of the true start."""
        a = max(self._onset - _FRAME, self._floor, self._buf.base)
        seg = np.abs(self._buf.view(a, self._onset + 2 * _FRAME))
        peak = float(np.max(seg[self._onset - a :])) if len(seg) > self._onset - a else 0.0
        above = np.flatnonzero(seg >= 0.25 * peak) if peak > 0 else np.zeros(0, dtype=np.int64)
        return a + int(above[0]) if len(above) else self._onset

    def _align(self, rough: int) -> int:
        """Refine a phrase start by normalised cross-correlation with the preamble waveform, a few ms around."""
        tmpl = _preamble_waveform()
        a = max(rough - _ALIGN_BEFORE, self._floor, self._buf.base)
        b = rough + _ALIGN_AFTER
        seg = self._buf.view(a, b + len(tmpl)).astype(np.float64)
        if len(seg) < len(tmpl) + (b - a):
            return rough
        corr = np.correlate(seg, tmpl, mode="valid")
        c = np.concatenate([[0.0], np.cumsum(seg * seg)])
        energy = c[len(tmpl) :] - c[: -len(tmpl)]
        ncc = corr / np.sqrt(energy * float(np.dot(tmpl, tmpl)) + 1e-20)
        return a + int(np.argmax(ncc))

    def _header(self, events: list[PhraseEvent], final: bool) -> None:
        rough = self._amplitude_onset() if self._buf.end >= self._onset + 2 * _FRAME else self._onset
        needed = rough + _ALIGN_AFTER + _HEADER_SYMBOLS * SYMBOL_SAMPLES
        if self._buf.end < needed:
            if final:
                self._to_garbage(rough, "audio ended before a phrase header (its first 0.24 s) was complete")
            return
        start = self._align(rough)
        starts = start + SYMBOL_SAMPLES * np.arange(_HEADER_SYMBOLS)
        values, scores = self._classify_at(starts)
        if tuple(values[:2]) != PREAMBLE or float(np.min(scores)) < MIN_HEADER_SCORE:
            self._to_garbage(rough, "no phrase preamble (noise, a tone, or audio in another encoding or rate?)")
            return
        length = int(values[2]) * 32 + int(values[3])
        self._start = start
        self._end = start + (_HEADER_SYMBOLS + length + _CRC_SYMBOLS) * SYMBOL_SAMPLES
        self._symbols = [int(v) for v in values]
        self._scores = []
        pre = self._buf.view(start, start + 2 * SYMBOL_SAMPLES)
        self._quiet_rms = min(ACTIVE_RMS, _INNER_SILENCE_RATIO * float(np.sqrt(np.mean(pre * pre))))
        self._quiet_frames = 0
        self._progress_text = ""
        self._scan = start
        self._state = _State.PHRASE

    def _classify_at(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = int(starts[0])
        x = self._buf.view(a, int(starts[-1]) + SYMBOL_SAMPLES)
        return _classify(x, starts - a)

    def _phrase(self, events: list[PhraseEvent], final: bool) -> None:
        # watch for a silence inside the phrase: it was cut short (or it was never one)
        limit = min(self._buf.end, self._end)
        n_frames = (limit - self._scan) // _FRAME
        if n_frames > 0:
            quiet = self._frame_rms(self._scan, n_frames) < self._quiet_rms
            for i, q in enumerate(quiet):
                self._quiet_frames = self._quiet_frames + 1 if q else 0
                if self._quiet_frames >= _GAP_FRAMES:
                    cut = self._scan + (i + 1 - _GAP_FRAMES) * _FRAME
                    self._emit_cut(events, cut, "silence inside a phrase")
                    self._scan = cut
                    self._state = _State.IDLE
                    return
            self._scan += n_frames * _FRAME
        if self._buf.end >= self._end:
            self._finish_phrase(events)
            return
        if final:
            self._emit_cut(events, self._buf.end, "audio ended inside a phrase")
            self._scan = self._buf.end
            self._state = _State.IDLE
            return
        # classify the symbols complete so far: the work of a phrase is spread over its playout instead of
        # landing in one burst when it ends (a caller decodes hundreds of calls in one event loop)
        ready = (self._buf.end - self._start) // SYMBOL_SAMPLES
        if self.progress or ready - len(self._symbols) >= _CLASSIFY_BATCH:
            self._classify_ready(ready)
        if self.progress:
            self._report_progress(events)

    def _classify_ready(self, upto: int) -> None:
        """Classify symbols ``len(self._symbols)`` .. ``upto`` - 1 of the current phrase (all in one batch)."""
        upto = min(upto, (self._end - self._start) // SYMBOL_SAMPLES)
        have = len(self._symbols)
        if upto <= have:
            return
        values, scores = self._classify_at(self._start + SYMBOL_SAMPLES * np.arange(have, upto))
        self._symbols += [int(v) for v in values]
        self._scores += [float(v) for v in scores]

    def _report_progress(self, events: list[PhraseEvent]) -> None:
        payload_end = (self._end - self._start) // SYMBOL_SAMPLES - _CRC_SYMBOLS
        text = _symbols_to_text(self._symbols[_HEADER_SYMBOLS:payload_end], partial=True)
        if text is not None and text != self._progress_text:
            self._progress_text = text
            end = self._start + len(self._symbols) * SYMBOL_SAMPLES
            events.append(PhraseProgress(text, self._seconds(self._start), self._seconds(end)))

    def _finish_phrase(self, events: list[PhraseEvent]) -> None:
        self._classify_ready((self._end - self._start) // SYMBOL_SAMPLES)
        scores = self._scores
        body = self._symbols[2:]
        payload, crc = body[2:-_CRC_SYMBOLS], body[-_CRC_SYMBOLS:]
        text = _symbols_to_text(payload)
        self._garbage_symbols = self._symbol_counts()
        if scores and min(scores) < MIN_SYMBOL_SCORE:
            worst = _HEADER_SYMBOLS + int(np.argmin(scores))
            reason = f"unclear symbol at {self._seconds(self._start + worst * SYMBOL_SAMPLES):.3f} s"
        elif crc != _crc_symbols(_crc(body[:-_CRC_SYMBOLS])):
            reason = "checksum mismatch"
        elif text is None:
            reason = "invalid symbol sequence"
        else:
            events.append(DecodedPhrase(text, self._seconds(self._start), self._seconds(self._end),
                                        symbols=len(self._symbols)))
            self._floor = self._scan = self._end
            self._state = _State.IDLE
            return
        # not a phrase after all: report the whole energetic stretch it belongs to
        self._state = _State.GARBAGE
        self._reason = reason
        self._last_active_end = self._end
        self._quiet_frames = 0
        self._scan = self._end

    def _emit_cut(self, events: list[PhraseEvent], end: int, why: str) -> None:
        heard = (end - self._start) / CODEC_SAMPLE_RATE
        total = (self._end - self._start) / CODEC_SAMPLE_RATE
        reason = f"phrase cut short: {why} after {heard:.2f} s of {total:.2f} s"
        self._classify_ready((end - self._start) // SYMBOL_SAMPLES)
        symbols, clear = self._symbol_counts()
        events.append(UndecodableAudio(self._seconds(self._start), self._seconds(end), reason, symbols=symbols,
                                       clear_symbols=clear))
        self._floor = end

    def _symbol_counts(self) -> tuple[int, int]:
        """The current phrase's symbols (header, payload, checksum) and how many were read clearly: the header
        was (it was recognised), then each classified symbol whose comb matched above the threshold; symbols not
        heard (a phrase cut short) are not clear."""
        symbols = (self._end - self._start) // SYMBOL_SAMPLES
        clear = _HEADER_SYMBOLS + sum(1 for v in self._scores if v >= MIN_SYMBOL_SCORE)
        return symbols, min(clear, symbols)

    def _to_garbage(self, start: int, reason: str) -> None:
        self._garbage_symbols = (0, 0)  # no phrase was recognised: nothing to count
        self._state = _State.GARBAGE
        self._start = start
        self._reason = reason
        self._last_active_end = self._onset
        self._quiet_frames = 0
        self._scan = self._onset

    def _garbage(self, events: list[PhraseEvent], final: bool) -> None:
        n_frames = (self._buf.end - self._scan) // _FRAME
        if n_frames > 0:
            active = self._frame_rms(self._scan, n_frames) >= ACTIVE_RMS
            for i, is_active in enumerate(active):
                if is_active:
                    self._last_active_end = self._scan + (i + 1) * _FRAME
                    self._quiet_frames = 0
                    continue
                self._quiet_frames += 1
                if self._quiet_frames >= _GAP_FRAMES:
                    self._end_garbage(events)
                    self._scan = self._scan + (i + 1) * _FRAME
                    self._state = _State.IDLE
                    return
            self._scan += n_frames * _FRAME
            self._buf.drop_before(self._scan - _IDLE_HISTORY)
        if final:
            tail = self._buf.view(self._scan, self._buf.end)
            if len(tail) and float(np.sqrt(np.mean(tail * tail))) >= ACTIVE_RMS:
                self._last_active_end = self._buf.end
            self._end_garbage(events)
            self._scan = self._buf.end
            self._state = _State.IDLE

    def _end_garbage(self, events: list[PhraseEvent]) -> None:
        end = max(self._last_active_end, self._start)
        if (end - self._start) / CODEC_SAMPLE_RATE >= MIN_UNDECODABLE_SECONDS:
            symbols, clear = self._garbage_symbols
            events.append(UndecodableAudio(self._seconds(self._start), self._seconds(end), self._reason,
                                           symbols=symbols, clear_symbols=clear))
        self._floor = end

    def _seconds(self, index: int) -> float:
        return index / CODEC_SAMPLE_RATE


def decode_phrases(samples: np.ndarray, sample_rate: int) -> list[PhraseEvent]:
    """Decode a whole recording: feed it all, then flush."""
    decoder = PhraseDecoder(sample_rate)
    return decoder.feed(samples) + decoder.flush()
