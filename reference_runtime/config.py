"""Typed configuration of the reference runtime.

Every section is a pydantic model that rejects unknown keys, so a typo fails at load time with the field path
(``providers.stt.endpointing_ms: Input should be a valid integer``) instead of silently using a default.
A config is loaded from YAML or JSON by :func:`load_config`; :func:`parse_config` validates an in-memory
mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.audio.formats import AudioFormat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config that does not validate; the message names the source, the field path and the reason."""


# --- telephony ----------------------------------------------------------------------------------------------


class TwilioConfig(_Strict):
    #: When set, ``POST /voice`` requires a valid ``X-Twilio-Signature`` (403 otherwise).
    auth_token: str | None = None


class AudioFormatConfig(_Strict):
    encoding: Literal["mulaw", "alaw", "linear16"]
    sample_rate: Annotated[int, Field(ge=8000, le=48000)]

    def to_format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate)


# --- providers ----------------------------------------------------------------------------------------------


class DeepgramSttConfig(_Strict):
    kind: Literal["deepgram"] = "deepgram"
    #: e.g. ``https://api.deepgram.com`` or a fake's ``http://127.0.0.1:PORT`` (``/v1/listen`` is appended).
    base_url: str
    api_key: str = "test-key"
    model: str = "nova-3-general"
    endpointing_ms: Annotated[int, Field(ge=10, le=10_000)] = 300
    utterance_end_ms: Annotated[int, Field(ge=1000, le=10_000)] | None = 1000
    #: seconds without audio after which a ``KeepAlive`` is sent (Deepgram closes after 10 s of nothing).
    keepalive_s: Annotated[float, Field(gt=0, le=9)] = 4.0


class OpenAILlmConfig(_Strict):
    kind: Literal["openai"] = "openai"
    #: ``https://api.openai.com/v1`` or a fake's ``http://127.0.0.1:PORT``; both forms are accepted.
    base_url: str
    api_key: str = "test-key"
    model: str = "gpt-4o-mini"
    #: connect timeout and longest wait between two streamed chunks, in seconds.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None


class ElevenLabsTtsConfig(_Strict):
    kind: Literal["elevenlabs"]
    base_url: str
    api_key: str = "test-key"
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    model: str = "eleven_flash_v2_5"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0


class DeepgramTtsConfig(_Strict):
    kind: Literal["deepgram"]
    base_url: str
    api_key: str = "test-key"
    #: Aura has no separate voice: the model names the voice. ``voice_id`` is accepted and ignored for
    #: symmetry.
    voice_id: str | None = None
    model: str = "aura-2-thalia-en"
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0


TtsConfig = Annotated[ElevenLabsTtsConfig | DeepgramTtsConfig, Field(discriminator="kind")]


class ProvidersConfig(_Strict):
    stt: DeepgramSttConfig
    llm: OpenAILlmConfig
    tts: TtsConfig


# --- conversation -------------------------------------------------------------------------------------------


class ObjectiveConfig(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")]
    instruction: str
    #: the objective that follows; ``None`` ends the graph (then the goodbye is spoken and the call hangs up).
    next: str | None = None
    #: a tool the LLM may call while this objective is active (run through the ToolRunner seam).
    tool: str | None = None
    #: a workflow event emitted when the caller's turn for this objective begins (e.g.
    #: ``appointment_booked``).
    event: str | None = None


class DialogConfig(_Strict):
    greeting: str = "Hello, thanks for calling. How can I help you today?"
    system_prompt: str = "You are a friendly phone assistant. Answer in one or two short sentences."
    objectives: Annotated[list[ObjectiveConfig], Field(min_length=1)] = Field(
        default_factory=lambda: [ObjectiveConfig(name="help", instruction="Help the caller.", next=None)]
    )
    goodbye: str = "Thank you for calling. Goodbye!"
    #: LLM rounds allowed for tool calls in one turn before the dialog moves on without them.
    max_tool_rounds: Annotated[int, Field(ge=0, le=10)] = 3

    @model_validator(mode="after")
    def _graph_is_closed(self) -> DialogConfig:
        names = [o.name for o in self.objectives]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"objective names must be unique, repeated: {duplicates}")
        for objective in self.objectives:
            if objective.next is not None and objective.next not in names:
                raise ValueError(
                    f"objective {objective.name!r} has next={objective.next!r}, which is not defined"
                )
        return self


class VadConfig(_Strict):
    #: frames louder than this (RMS, dB relative to full scale) count as speech.
    threshold_dbfs: Annotated[float, Field(le=0)] = -38.0
    #: speech must last this long before it counts (filters clicks).
    min_speech_ms: Annotated[int, Field(ge=0, le=2000)] = 80
    #: silence must last this long before speech counts as stopped (bridges gaps between syllables).
    hangover_ms: Annotated[int, Field(ge=0, le=5000)] = 300


class S3StorageConfig(_Strict):
    """An S3-compatible object store for call recordings (AWS S3, MinIO, or the harness's embedded moto server).

    The timeouts and attempts are explicit because botocore's defaults (60 s connect, 60 s read, 3 attempts) turn
    a stalled store into minutes per call: the call's worker slot waits for its upload (incident 1), and a chaos
    run behind a stalling proxy would take that long to show it.
    """

    #: ``http://127.0.0.1:PORT`` for an embedded or proxied store; ``None`` = AWS's own endpoint for ``region``.
    endpoint_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+/?$")] | None = None
    #: S3 bucket naming rules (3-63 characters: lower-case letters, digits, dots, hyphens).
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")]
    region: Annotated[str, Field(min_length=1)] = "us-east-1"
    #: both or neither; neither = boto3's own credential chain (environment, profile, instance role).
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: the folder the recordings go under (``<key_prefix>/<call_sid>/caller.wav``); "" = the bucket's root.
    #: Leading and trailing slashes are dropped.
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9!_.*'()/\-]*$")] = "recordings"
    #: seconds to open a TCP connection to the store (per attempt).
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    #: seconds the store may stay silent on an open connection (per socket read, per attempt).
    read_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: attempts per object, the first included (1 = no retry); botocore's "standard" retry mode backs off
    #: between them.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3

    @field_validator("key_prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _credentials_come_in_pairs(self) -> S3StorageConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together (or both left out)")
        return self


class RecordingConfig(_Strict):
    #: write each call's recording to this folder.
    folder: str | None = None
    #: upload each call's recording to this object store (see recording.py for the object layout).
    s3: S3StorageConfig | None = None
    #: with neither ``folder`` nor ``s3``: recordings are kept in memory, the last ``keep_last`` of them.
    keep_last: Annotated[int, Field(ge=0, le=10_000)] = 20

    @model_validator(mode="after")
    def _one_destination(self) -> RecordingConfig:
        if self.folder and self.s3 is not None:
            raise ValueError("recording: set either folder or s3, not both")
        return self


class WorkflowConfig(_Strict):
    #: workflow events are POSTed as JSON here; without it they are only logged.
    url: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0


class ToolsConfig(_Strict):
    #: tool calls are POSTed as JSON ``{"tool", "arguments", "call_sid"}`` here; the JSON reply is the result.
    url: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: without ``url``: a canned result per tool name (unknown tools answer ``{"ok": true}``).
    static_results: dict[str, Any] = Field(default_factory=dict)


class SafeguardsConfig(_Strict):
    """Reserved for the safeguards issue (spool, fallback chains, circuit breakers, memory drain...).
    Today only the empty mapping is valid, so a scenario written for a later runtime fails loudly here."""


# --- the whole runtime --------------------------------------------------------------------------------------


class RuntimeConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    #: ``ws://host/media`` derived from the webhook's Host header when unset.
    public_ws_url: str | None = None
    #: concurrent calls per process; the next one is rejected (TwiML ``<Reject reason="busy"/>``, ws close
    #: 1013).
    capacity: Annotated[int, Field(ge=1, le=10_000)] = 8
    #: seconds a SIGTERM waits for calls in progress before the process exits anyway.
    shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    providers: ProvidersConfig
    dialog: DialogConfig = Field(default_factory=DialogConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    #: the audio the runtime exchanges with Twilio (PSTN Media Streams: μ-law 8 kHz).
    telephony_audio: AudioFormatConfig = AudioFormatConfig(encoding="mulaw", sample_rate=8000)
    #: what the runtime sends to STT.
    #: Linear PCM at the telephony rate by default, as Pipecat sends Twilio audio to Deepgram: no resampling on
    #: the hot path (every caller frame, 50 a second per call); 16 kHz is a config away and goes through soxr.
    stt_audio: AudioFormatConfig = AudioFormatConfig(encoding="linear16", sample_rate=8000)
    #: what the runtime asks TTS for (ElevenLabs ``output_format`` / Aura ``encoding`` + ``sample_rate``).
    tts_audio: AudioFormatConfig = AudioFormatConfig(encoding="mulaw", sample_rate=8000)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    safeguards: SafeguardsConfig = Field(default_factory=SafeguardsConfig)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid runtime config"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: Mapping[str, Any], *, source: str = "<config>") -> RuntimeConfig:
    """Validate a mapping; raises :class:`ConfigError` naming the source and each failing field path."""
    try:
        return RuntimeConfig.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> RuntimeConfig:
    """Load a ``.json``, ``.yaml`` or ``.yml`` file, apply top-level ``overrides`` (e.g. ``--port``),
    validate."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data.update(overrides or {})
    return parse_config(data, source=str(path))
