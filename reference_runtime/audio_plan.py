"""Which audio format goes where: the one function the "encoding safeguard" (incident 2) replaces.

Today the formats come straight from config (``telephony_audio``, ``stt_audio``, ``tts_audio``), like a
platform that hard-codes them: set ``telephony_audio`` to linear16 16 kHz and Twilio callers hear garbage, as
in the Retell incident. The safeguard chooses per transport (from the ``start`` message and the telephony
provider) and validates telephony/STT/TTS compatibility before any call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.audio.formats import AudioFormat
from reference_runtime.config import RuntimeConfig
from reference_runtime.media_stream import StreamStarted


@dataclass(frozen=True, slots=True)
class AudioPlan:
    telephony: AudioFormat
    """what the runtime believes Twilio sends and expects back (it decodes and encodes the stream with it)"""
    stt: AudioFormat
    """what the runtime sends to speech-to-text"""
    tts: AudioFormat
    """what the runtime asks text-to-speech for (converted to ``telephony`` when they differ)"""


#: (config, the stream's start message) -> plan; called once per call, after ``start``.
AudioPlanner = Callable[[RuntimeConfig, StreamStarted], AudioPlan]


def plan_from_config(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    return AudioPlan(
        telephony=config.telephony_audio.to_format(),
        stt=config.stt_audio.to_format(),
        tts=config.tts_audio.to_format(),
    )
