"""The audio-format compatibility check of telephony, STT and TTS (safeguard 2, incident 2: Retell + Twilio).

Why: Twilio PSTN Media Streams carry μ-law at 8 kHz; a platform that assumes the WebRTC default (PCM 16 kHz)
reads every caller frame as noise and sends back bytes Twilio plays as noise: 100 % of calls fail, and nothing
errors. The fix is to know, per telephony provider and transport, what the line speaks, and to refuse a
configuration whose parts cannot talk to each other *at onboarding*, before any call: ``python -m
reference_runtime check-config CONFIG`` (and ``voicechaos runtime check-config``) and the runtime's start both
run :func:`audio_problems`.

What is compatible (each rule names both sides when it fails):

1. ``telephony_audio``, when the config sets it, is what the telephony provider and transport send
   (:data:`TELEPHONY_FORMATS`). Left unset, the runtime takes the transport's format.
2. Every STT provider of the chain (primary and fallbacks) accepts ``stt_audio``, and every TTS provider of the
   chain can produce ``tts_audio`` (:data:`STT_ACCEPTS`, :data:`TTS_PRODUCES`, from each provider's API docs).
3. The telephony format reaches STT, and TTS audio reaches telephony: either the formats are equal, or
   ``transcoding`` is on (the runtime decodes G.711/PCM, resamples with soxr and re-encodes, any format to any
   format). With ``transcoding: false`` audio passes as bytes, so both must equal the telephony format.

With ``safeguards.encoding: broken`` the runtime hard-codes PCM 16 kHz everywhere (:data:`HARD_CODED`) and
does not run the check at start (that is the broken way); :func:`audio_problems` still reports what it would
refuse, so ``check-config`` shows why such a runtime garbles Twilio PSTN calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K, AudioFormat
from reference_runtime.config import ConfigError, RuntimeConfig, load_config, parse_config

#: what each telephony provider and transport carries to and from the runtime.
#: Twilio PSTN: Media Streams are "audio/x-mulaw" at 8000 Hz (Twilio, Media Streams WebSocket Messages).
#: Twilio WebRTC (Voice SDK calls bridged to the agent) and Daily: 16-bit PCM at 16 kHz, the WebRTC default
#: voice-agent transports deliver; Daily's PSTN/SIP dial-in reaches the bot through the same Daily transport.
TELEPHONY_FORMATS: Mapping[tuple[str, str], AudioFormat] = {
    ("twilio", "pstn"): TWILIO_MULAW_8K,
    ("twilio", "webrtc"): PCM_16K,
    ("daily", "webrtc"): PCM_16K,
    ("daily", "pstn"): PCM_16K,
}

#: the broken way: the platform default (WebRTC PCM 16 kHz) used for telephony, STT and TTS alike
HARD_CODED = PCM_16K


@dataclass(frozen=True, slots=True)
class Formats:
    """The formats a provider accepts or produces: these encodings at any rate, or these exact formats."""

    encodings: frozenset[str] = frozenset()
    exact: frozenset[AudioFormat] = frozenset()

    def __contains__(self, fmt: object) -> bool:
        return isinstance(fmt, AudioFormat) and (fmt.encoding in self.encodings or fmt in self.exact)

    def describe(self) -> str:
        parts = [f"{e} at any rate" for e in sorted(self.encodings)]
        by_encoding: dict[str, list[int]] = {}
        for fmt in self.exact:
            by_encoding.setdefault(fmt.encoding, []).append(fmt.sample_rate)
        parts += [f"{e} {'/'.join(str(r) for r in sorted(rates))} Hz" for e, rates in sorted(by_encoding.items())]
        return ", ".join(parts)


def _exact(encoding: str, *rates: int) -> set[AudioFormat]:
    return {AudioFormat(encoding, rate) for rate in rates}  # type: ignore[arg-type]


#: what each STT provider accepts as raw audio.
#: Deepgram live: ``encoding=linear16|mulaw|alaw`` with any ``sample_rate``.
#: AssemblyAI Universal-Streaming: ``encoding=pcm_s16le|pcm_mulaw`` with any ``sample_rate`` (no A-law).
STT_ACCEPTS: Mapping[str, Formats] = {
    "deepgram": Formats(encodings=frozenset({"linear16", "mulaw", "alaw"})),
    "assemblyai": Formats(encodings=frozenset({"linear16", "mulaw"})),
}

#: what each TTS provider produces as raw audio.
#: ElevenLabs ``output_format``: ``ulaw_8000``, ``alaw_8000``, ``pcm_8000`` ... ``pcm_48000``.
#: Deepgram Aura: linear16 at 8/16/24/32/48 kHz, mulaw and alaw at 8/16 kHz.
TTS_PRODUCES: Mapping[str, Formats] = {
    "elevenlabs": Formats(
        exact=frozenset(
            _exact("mulaw", 8000)
            | _exact("alaw", 8000)
            | _exact("linear16", 8000, 16000, 22050, 24000, 32000, 44100, 48000)
        )
    ),
    "deepgram": Formats(
        exact=frozenset(
            _exact("linear16", 8000, 16000, 24000, 32000, 48000)
            | _exact("mulaw", 8000, 16000)
            | _exact("alaw", 8000, 16000)
        )
    ),
}


class IncompatibleConfig(ConfigError):
    """A configuration whose telephony, STT and TTS formats cannot work together; lists every problem."""

    def __init__(self, problems: list[str], *, source: str = "<config>") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: incompatible audio formats, refused before any call:\n{lines}")


def describe(fmt: AudioFormat) -> str:
    return f"{fmt.encoding} {fmt.sample_rate} Hz"


def telephony_side(config: RuntimeConfig) -> str:
    return f"telephony {config.telephony.provider}/{config.telephony.transport}"


def telephony_format(config: RuntimeConfig) -> AudioFormat:
    """What the configured telephony provider and transport carry."""
    return TELEPHONY_FORMATS[(config.telephony.provider, config.telephony.transport)]


@dataclass(frozen=True, slots=True)
class PlannedFormats:
    telephony: AudioFormat
    stt: AudioFormat
    tts: AudioFormat


def planned_formats(config: RuntimeConfig, mode: str | None = None) -> PlannedFormats:
    """The formats the runtime uses in ``mode`` (default: the config's ``safeguards.encoding``)."""
    if (mode or config.safeguards.encoding) == "broken":
        return PlannedFormats(HARD_CODED, HARD_CODED, HARD_CODED)
    return PlannedFormats(telephony_format(config), config.stt_audio.to_format(), config.tts_audio.to_format())


def _chain(config: RuntimeConfig, role: str) -> list[tuple[str, str]]:
    """(position, kind) of each provider the runtime may use for ``role``: fallbacks only in fixed mode."""
    providers = config.providers
    primary = getattr(providers, role)
    fallbacks = getattr(providers.fallbacks, role) if config.safeguards.providers == "fixed" else []
    return [("primary", primary.kind), *(("fallback", f.kind) for f in fallbacks)]


def audio_problems(config: RuntimeConfig) -> list[str]:
    """Every incompatibility between the telephony, STT and TTS formats of ``config``; empty when it is sound."""
    problems: list[str] = []
    side = telephony_side(config)
    line = telephony_format(config)
    planned = planned_formats(config)
    if config.safeguards.encoding == "broken":
        if line != HARD_CODED:
            problems.append(
                f"{side} sends {describe(line)} but the runtime hard-codes {describe(HARD_CODED)} "
                "(safeguards.encoding: broken)"
            )
    elif "telephony_audio" in config.model_fields_set and config.telephony_audio.to_format() != line:
        problems.append(
            f"{side} sends {describe(line)} but telephony_audio is {describe(config.telephony_audio.to_format())}"
        )
    for position, kind in _chain(config, "stt"):
        accepts = STT_ACCEPTS[kind]
        if planned.stt not in accepts:
            problems.append(
                f"stt_audio is {describe(planned.stt)} but stt {position} {kind} accepts only {accepts.describe()}"
            )
    for position, kind in _chain(config, "tts"):
        produces = TTS_PRODUCES[kind]
        if planned.tts not in produces:
            problems.append(
                f"tts_audio is {describe(planned.tts)} but tts {position} {kind} produces only {produces.describe()}"
            )
    if not config.transcoding:
        if planned.stt != planned.telephony:
            problems.append(
                f"{side} sends {describe(planned.telephony)} but stt_audio is {describe(planned.stt)} "
                "and no transcoding is configured (transcoding: false)"
            )
        if planned.tts != planned.telephony:
            problems.append(
                f"tts_audio is {describe(planned.tts)} but {side} expects {describe(planned.telephony)} "
                "and no transcoding is configured (transcoding: false)"
            )
    return problems


def check_config(source: str | Path | Mapping[str, Any] | RuntimeConfig) -> list[str]:
    """The onboarding check: a config file, a mapping or a parsed config -> the problems found (empty: sound).

    A config that does not even validate is one problem (the validation message, naming the field). Whatever
    ``safeguards.encoding`` says, the audio is checked: the broken way's hard-coded PCM is reported too.
    """
    try:
        if isinstance(source, RuntimeConfig):
            config = source
        elif isinstance(source, Mapping):
            config = parse_config(source)
        else:
            config = load_config(source)
    except ConfigError as error:
        return [str(error)]
    except OSError as error:
        return [f"{source}: cannot read: {error.strerror or error}"]
    return audio_problems(config)


def ensure_compatible(config: RuntimeConfig, *, source: str = "<config>") -> None:
    """The runtime's start: with the encoding safeguard on, refuse an incompatible config (raises
    :class:`IncompatibleConfig`). The broken way starts whatever it is given, as the platform of incident 2 did."""
    if config.safeguards.encoding != "fixed":
        return
    problems = audio_problems(config)
    if problems:
        raise IncompatibleConfig(problems, source=source)


_START_ENCODINGS = {
    "audio/x-mulaw": "mulaw",
    "audio/pcmu": "mulaw",
    "audio/x-alaw": "alaw",
    "audio/pcma": "alaw",
    "audio/l16": "linear16",
    "audio/x-l16": "linear16",
    # the encoding names of this runtime's own config, as the WebRTC link's synthesized ``start`` announces them
    "linear16": "linear16",
    "mulaw": "mulaw",
    "alaw": "alaw",
}


def announced_format(encoding: str, sample_rate: int) -> AudioFormat | None:
    """The format a stream's ``start`` message announces (``mediaFormat``), if it is one we know."""
    name = _START_ENCODINGS.get(encoding.strip().lower())
    if name is None or sample_rate <= 0:
        return None
    return AudioFormat(name, sample_rate)  # type: ignore[arg-type]
