"""Which audio format goes where, per call: the seam of the encoding safeguard (incident 2).

A call comes over one of two transports, told by its ``start`` (:attr:`StreamStarted.transport`): Twilio Media
Streams (``/media``, the line of the configured telephony provider: μ-law 8 kHz for Twilio PSTN) or the runtime's
own WebRTC endpoint (``/webrtc/offer``, reference_runtime/webrtc.py), whose link carries 16-bit PCM at 16 kHz
(:data:`WEBRTC_AUDIO`; Opus on the wire, decoded and resampled by the link). "Telephony" below is the format of the
call's line, whichever it is.

- :func:`plan_hard_coded` (``safeguards.encoding: broken``): one format hard-coded everywhere, the other
  transport's.

  - On Twilio: PCM 16 kHz, the WebRTC default a platform hard-codes. The runtime then reads the caller's μ-law
    8 kHz bytes as linear16 16 kHz (noise to VAD and STT: empty transcripts) and sends linear16 16 kHz back, which
    Twilio plays as μ-law 8 kHz (noise, four times too long, to the caller). Nothing errors: that is the incident.
  - On WebRTC, the twin in the other direction: a runtime tuned for the phone hard-codes μ-law 8 kHz
    (:data:`PHONE_HARD_CODED`). It reads the caller's PCM 16 kHz bytes as μ-law (STT gets noise) and sends μ-law
    8 kHz bytes, which the WebRTC link plays as PCM 16 kHz (noise, a quarter of the length, to the caller). Worse
    than on Twilio, the caller's very silence is noise: PCM zeros read as μ-law byte 0x00, full scale, so the
    energy VAD hears the caller talking from the first frame (and, when that speech is detected after the
    greeting's first audio went out, the runtime barges in on its own greeting and clears it).
- :func:`plan_for_transport` (``fixed``): the telephony format follows from the transport: on Twilio, from the
  configured telephony provider and transport (reference_runtime/compat.py); on WebRTC, PCM 16 kHz. STT and TTS
  get their configured formats, converted by the call's transcoders. The config was checked at start
  (:func:`~reference_runtime.compat.ensure_compatible`); a stream whose ``start`` announces another format than
  its transport's is refused (:class:`AudioMismatch`) rather than garbled. Twilio calls are planned exactly as
  before WebRTC existed.
- :func:`plan_from_config`: the formats exactly as configured (``telephony_audio``...), for tests and tools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat
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


#: what the runtime's WebRTC link carries (reference_runtime/webrtc.py converts the track's frames to and from it)
WEBRTC_AUDIO = PCM_16K
#: the broken way on WebRTC: the format of the phone line, hard-coded for telephony, STT and TTS alike
PHONE_HARD_CODED = TWILIO_MULAW_8K


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
    """The broken way: the other transport's format, whatever ``start`` says (PCM 16 kHz on Twilio, μ-law 8 kHz
    on WebRTC)."""
    if start.transport == "webrtc":
        return AudioPlan(PHONE_HARD_CODED, PHONE_HARD_CODED, PHONE_HARD_CODED)
    formats = planned_formats(config, "broken")
    return AudioPlan(formats.telephony, formats.stt, formats.tts)


def plan_for_transport(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    """The fix: the telephony format of the call's transport (on Twilio, of the configured provider and
    transport), checked against ``start``."""
    formats = planned_formats(config, "fixed")
    if start.transport == "webrtc":
        line, side = WEBRTC_AUDIO, "the WebRTC link"
    else:
        line, side = formats.telephony, telephony_side(config)
    announced = announced_format(start.encoding, start.sample_rate)
    if announced is not None and announced != line:
        raise AudioMismatch(f"{side} should send {describe(line)} but this stream announces {describe(announced)}")
    return AudioPlan(line, formats.stt, formats.tts)


def plan_audio(config: RuntimeConfig, start: StreamStarted) -> AudioPlan:
    """The default planner: by ``safeguards.encoding``."""
    if config.safeguards.encoding == "broken":
        return plan_hard_coded(config, start)
    return plan_for_transport(config, start)
