"""Which audio format goes where, per call: the seam of the encoding safeguard (incident 2).

- :func:`plan_hard_coded` (``safeguards.encoding: broken``): PCM 16 kHz everywhere, the WebRTC default a
  platform hard-codes. On Twilio PSTN the runtime then reads the caller's μ-law 8 kHz bytes as linear16 16 kHz
  (noise to VAD and STT: empty transcripts) and sends linear16 16 kHz back, which Twilio plays as μ-law 8 kHz
  (noise, four times too long, to the caller). Nothing errors: that is the incident.
- :func:`plan_for_transport` (``fixed``): the telephony format follows from the telephony provider and transport
  (reference_runtime/compat.py), STT and TTS get their configured formats, converted by the call's transcoders.
  The config was checked at start (:func:`~reference_runtime.compat.ensure_compatible`); a stream whose
  ``start`` announces another format than its transport's is refused (:class:`AudioMismatch`) rather than
  garbled.
- :func:`plan_from_config`: the formats exactly as configured (``telephony_audio``...), for tests and tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.audio.formats import AudioFormat
from reference_runtime.compat import announced_format, describe, planned_formats, telephony_side
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


class AudioMismatch(ValueError):
    """The stream announces a format its telephony transport should not carry: the call is refused."""


#: (config, the stream's start message) -> plan; called once per call, after ``start``.
AudioPlanner = Callable[[RuntimeConfig, StreamStarted], AudioPlan]


def plan_from_config(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    return AudioPlan(
        telephony=config.telephony_audio.to_format(),
        stt=config.stt_audio.to_format(),
        tts=config.tts_audio.to_format(),
    )


def plan_hard_coded(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    """The broken way: PCM 16 kHz, whatever the transport and whatever ``start`` says."""
    formats = planned_formats(config, "broken")
    return AudioPlan(formats.telephony, formats.stt, formats.tts)


def plan_for_transport(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    """The fix: the telephony format of the configured provider and transport, checked against ``start``."""
    formats = planned_formats(config, "fixed")
    announced = announced_format(start.encoding, start.sample_rate)
    if announced is not None and announced != formats.telephony:
        raise AudioMismatch(
            f"{telephony_side(config)} should send {describe(formats.telephony)} but this stream announces "
            f"{describe(announced)}"
        )
    return AudioPlan(formats.telephony, formats.stt, formats.tts)


def plan_audio(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    """The default planner: by ``safeguards.encoding``."""
    if config.safeguards.encoding == "broken":
        return plan_hard_coded(config, start)
    return plan_for_transport(config, start)
