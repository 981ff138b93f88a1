"""G.711 μ-law and A-law companding (ITU-T Recommendation G.711), vectorised with numpy.

Twilio Media Streams carry raw μ-law at 8 kHz (no header). Python's ``audioop`` is gone in 3.13, so we keep our own
codec: decoding goes through a 256-entry table, encoding through a 65536-entry table built once from the standard
segment algorithm. Both are pure functions of their input; no I/O, no state.
"""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x84


def _mulaw_decode_table() -> np.ndarray:
    # G.711 section 2 / the classic Sun reference implementation: invert, split sign/exponent/mantissa.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _mulaw_encode_table() -> np.ndarray:
    # 14-bit reference encoder of G.711 (as in CPython's former audioop): arithmetic shift, sign as a mask.
    sample = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(sample < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(sample), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), magnitude)
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _alaw_encode_table() -> np.ndarray:
    sample = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(sample >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(sample >= 0, sample, -sample - 1), 32767) >> 3
    exponent = np.where(magnitude >= 32, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


_MULAW_TO_LINEAR = _mulaw_decode_table()
_LINEAR_TO_MULAW = _mulaw_encode_table()
_ALAW_TO_LINEAR = _alaw_decode_table()
_LINEAR_TO_ALAW = _alaw_encode_table()

#: the μ-law byte for digital silence (what Twilio sends while nobody speaks)
MULAW_SILENCE = int(_LINEAR_TO_MULAW[32768])


def mulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes -> int16 samples."""
    return _MULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> μ-law bytes."""
    return _LINEAR_TO_MULAW[samples.astype(np.int32) + 32768].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes -> int16 samples."""
    return _ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes."""
    return _LINEAR_TO_ALAW[samples.astype(np.int32) + 32768].tobytes()
