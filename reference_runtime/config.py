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


class TelephonyConfig(_Strict):
    """Who carries the calls, and how: this fixes the audio the caller side speaks (safeguard 2 chooses the
    telephony format from it, reference_runtime/compat.py ``TELEPHONY_FORMATS``: Twilio PSTN is μ-law 8 kHz,
    Twilio WebRTC and Daily are PCM 16 kHz)."""

    provider: Literal["twilio", "daily"] = "twilio"
    transport: Literal["pstn", "webrtc"] = "pstn"


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
    #: seconds to open the websocket (connect + handshake): past it the open fails, and a fallback is tried.
    open_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class AssemblyAISttConfig(_Strict):
    """AssemblyAI Universal-Streaming (v3 websocket), the STT fallback of another API family than Deepgram."""

    kind: Literal["assemblyai"]
    #: ``https://streaming.assemblyai.com`` or a fake's ``http://127.0.0.1:PORT`` (``/v3/ws`` is appended).
    base_url: str
    api_key: str = "test-key"
    speech_model: str = "universal-streaming-english"
    #: ask for formatted finals (punctuation, casing): the final of a turn is then its formatted ``Turn``.
    format_turns: bool = True
    #: AssemblyAI's ``min_end_of_turn_silence_when_confident`` (ms of silence that end a confident turn).
    min_end_of_turn_silence_ms: Annotated[int, Field(ge=0, le=10_000)] = 400
    #: AssemblyAI's ``max_turn_silence`` (ms of silence that end a turn whatever the confidence).
    max_turn_silence_ms: Annotated[int, Field(ge=0, le=10_000)] = 1280
    #: audio is sent in chunks of at least this many ms: AssemblyAI refuses chunks under 50 ms (close 3007), and
    #: Twilio's are 20 ms.
    chunk_ms: Annotated[int, Field(ge=50, le=1000)] = 100
    #: seconds to open the websocket and receive ``Begin``.
    open_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class OpenAILlmConfig(_Strict):
    kind: Literal["openai"] = "openai"
    #: ``https://api.openai.com/v1`` or a fake's ``http://127.0.0.1:PORT``; both forms are accepted.
    base_url: str
    api_key: str = "test-key"
    model: str = "gpt-4o-mini"
    #: connect timeout and longest wait between two streamed chunks, in seconds.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None


class AnthropicLlmConfig(_Strict):
    """Anthropic Messages API (``POST /v1/messages``, SSE), the LLM fallback of another API family than OpenAI."""

    kind: Literal["anthropic"]
    #: ``https://api.anthropic.com`` or a fake's ``http://127.0.0.1:PORT``; a trailing ``/v1`` is accepted.
    base_url: str
    api_key: str = "test-key"
    model: str = "claude-3-5-haiku-latest"
    #: required by the Messages API; a phone reply is short.
    max_tokens: Annotated[int, Field(ge=1, le=100_000)] = 1024
    #: connect timeout and longest wait between two streamed events, in seconds.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    anthropic_version: str = "2023-06-01"


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


SttFallbackConfig = Annotated[DeepgramSttConfig | AssemblyAISttConfig, Field(discriminator="kind")]
LlmFallbackConfig = Annotated[OpenAILlmConfig | AnthropicLlmConfig, Field(discriminator="kind")]


class FallbacksConfig(_Strict):
    """Providers tried in this order after the primary (safeguard 4, fixed mode only), each with its own breaker.
    ``kind`` is required here; each kind at most once per role (metrics and breakers are keyed by provider)."""

    stt: list[SttFallbackConfig] = Field(default_factory=list)
    llm: list[LlmFallbackConfig] = Field(default_factory=list)
    tts: list[TtsConfig] = Field(default_factory=list)


class BreakerConfig(_Strict):
    """The circuit breaker of every provider (reference_runtime/breaker.py)."""

    #: consecutive failures (refusals, errors, timeouts, dropped streams) that open it
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    #: seconds it stays open (the provider is skipped) before one trial request is let through
    reset_after_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


class ProvidersConfig(_Strict):
    #: the primaries (``kind`` optional for stt and llm, as before fallbacks existed)
    stt: DeepgramSttConfig
    llm: OpenAILlmConfig
    tts: TtsConfig
    fallbacks: FallbacksConfig = Field(default_factory=FallbacksConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @model_validator(mode="after")
    def _one_provider_of_a_kind_per_role(self) -> ProvidersConfig:
        for role, primary, fallbacks in (
            ("stt", self.stt, self.fallbacks.stt),
            ("llm", self.llm, self.fallbacks.llm),
            ("tts", self.tts, self.fallbacks.tts),
        ):
            kinds = [primary.kind, *(f.kind for f in fallbacks)]
            repeated = sorted({k for k in kinds if kinds.count(k) > 1})
            if repeated:
                raise ValueError(f"{role}: a fallback must be another provider than the ones before it, {repeated} "
                                 "appears twice")
        return self


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


class SpoolConfig(_Strict):
    """The durable local spool in front of the object store (safeguard 1, fixed; reference_runtime/spool.py).

    A call's recording is written here (atomically) when the call ends and its slot is freed at once; a
    background uploader sends the spooled recordings to ``recording.s3`` and deletes each only once it is stored.
    """

    #: the spool folder. Point every process of one runtime instance at the same folder (the harness passes one
    #: under the run folder): a restarted process uploads what its predecessor left. Unset: a fresh temporary
    #: folder per process (logged; removed at exit when empty), so leftovers survive on disk but are picked up
    #: only by a process configured with that folder.
    dir: str | None = None
    #: bytes the spool may hold; a recording that would exceed it is refused (counted lost). Unset: no limit.
    max_bytes: Annotated[int, Field(ge=1)] | None = None
    #: wait after the first failed upload, doubled after each further failure (with jitter) up to ``retry_max_s``
    retry_initial_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @model_validator(mode="after")
    def _initial_below_max(self) -> SpoolConfig:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        return self


class RecordingConfig(_Strict):
    #: write each call's recording to this folder.
    folder: str | None = None
    #: upload each call's recording to this object store (see recording.py for the object layout).
    s3: S3StorageConfig | None = None
    #: with neither ``folder`` nor ``s3``: recordings are kept in memory, the last ``keep_last`` of them.
    keep_last: Annotated[int, Field(ge=0, le=10_000)] = 20
    #: with ``s3`` and ``safeguards.recording: fixed``: the durable spool and the uploader's retries
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    #: with ``s3`` and ``safeguards.recording: fixed``: the uploader's circuit breaker (open: the store is not
    #: tried for ``reset_after_s``; then one trial upload)
    breaker: BreakerConfig = Field(default_factory=lambda: BreakerConfig(failure_threshold=3, reset_after_s=5.0))

    @model_validator(mode="after")
    def _one_destination(self) -> RecordingConfig:
        if self.folder and self.s3 is not None:
            raise ValueError("recording: set either folder or s3, not both")
        return self


class MemoryConfig(_Strict):
    """The memory budget and its monitor (safeguard 5; reference_runtime/memory.py). RSS is compared with
    ``budget_mb``: fixed mode alerts at ``alert_fraction`` and drains at ``drain_fraction`` (no new calls, the
    calls in progress finish, then the process exits with code 75 for its supervisor to restart it)."""

    #: the process's memory budget (a container's memory limit), in MiB
    budget_mb: Annotated[float, Field(gt=0, le=1_048_576)] = 1024.0
    #: seconds between two RSS readings
    check_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    alert_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    drain_fraction: Annotated[float, Field(gt=0, le=1)] = 0.85
    #: seconds a memory drain waits for the calls in progress before the process exits anyway
    drain_timeout_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    #: emulate the container's memory limit: at 100 % of the budget the process kills itself with SIGKILL, as
    #: the kernel's OOM killer kills a container over its limit (calls in progress are dropped). Either mode;
    #: off by default. The memory incident turns it on so that the broken side dies the way the incident did.
    oom_kill: bool = False

    @model_validator(mode="after")
    def _alert_before_drain(self) -> MemoryConfig:
        if self.alert_fraction > self.drain_fraction:
            raise ValueError("alert_fraction must not exceed drain_fraction")
        return self


class WorkflowConfig(_Strict):
    """Where workflow events go and, in fixed mode (safeguard 3), how the background worker delivers them
    (reference_runtime/workflow.py)."""

    #: workflow events are POSTed as JSON here; without it they are only logged.
    url: str | None = None
    #: per delivery attempt
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: events waiting for delivery; when full, a new event is dropped (and counted)
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    #: events being delivered at a time
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 16
    #: attempts per event, the first included (1 = no retry)
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    #: wait after the first failed attempt, doubled after each further one, up to ``retry_backoff_max_s``
    retry_backoff_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    retry_backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    #: the workflow API's circuit breaker
    breaker: BreakerConfig = Field(default_factory=lambda: BreakerConfig(failure_threshold=5, reset_after_s=5.0))
    #: at shutdown, seconds given to the queued events before the undelivered ones are counted as dropped
    drain_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 5.0


class ToolsConfig(_Strict):
    """Where tool calls go and, in fixed mode (safeguard 6), when a filler covers a slow tool
    (reference_runtime/tools.py)."""

    #: tool calls are POSTed as JSON ``{"tool", "arguments", "call_sid"}`` here; the JSON reply is the result.
    url: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: without ``url``: a canned result per tool name (unknown tools answer ``{"ok": true}``).
    static_results: dict[str, Any] = Field(default_factory=dict)
    #: spoken while a slow tool runs
    filler: Annotated[str, Field(min_length=1)] = "Let me check that for you."
    #: spoken when the result has not arrived within ``result_wait_s``; the turn then carries on without it
    still_checking: Annotated[str, Field(min_length=1)] = "I am still checking, one moment."
    #: a tool expected to take at least this long gets the filler at once
    slow_tool_s: Annotated[float, Field(ge=0, le=60)] = 0.5
    #: otherwise the filler starts when the tool has not answered after this long
    filler_after_s: Annotated[float, Field(ge=0, le=60)] = 0.4
    #: seconds from a tool's start during which its result is awaited and used in the same turn
    result_wait_s: Annotated[float, Field(gt=0, le=300)] = 3.0
    #: expected latency per tool name, in seconds, before any run of it has ended (then learned from its runs);
    #: tools not named here are unknown until their first run ends
    expected_latency_s: dict[str, Annotated[float, Field(ge=0, le=300)]] = Field(default_factory=dict)
    #: weight of the newest run in the learned latency (exponentially weighted moving average)
    latency_ewma_alpha: Annotated[float, Field(gt=0, le=1)] = 0.3

    @model_validator(mode="after")
    def _filler_before_giving_up(self) -> ToolsConfig:
        if self.result_wait_s <= self.filler_after_s:
            raise ValueError("result_wait_s must be longer than filler_after_s (the filler comes first)")
        return self


Mode = Literal["broken", "fixed"]


class SafeguardsConfig(_Strict):
    """The six safeguards of ``shared/mission.md``, each ``broken`` (the way a platform once shipped, reproducing
    its incident) or ``fixed``. Every one defaults to ``fixed``, so a run shows the fix unless a scenario asks for
    the broken way (the incident library does, per incident). Each safeguard's own settings sit in the section
    that owns it (``recording.spool``, ``memory``, ``providers.fallbacks``...)."""

    #: 1. recordings: broken = the call worker uploads synchronously at call end; fixed = durable spool, background
    #: uploader with retries behind a circuit breaker
    recording: Mode = "fixed"
    #: 2. audio encoding: broken = PCM 16 kHz hard-coded; fixed = chosen per telephony provider and transport, and a
    #: telephony/STT/TTS compatibility check that refuses a mismatched config before any call
    encoding: Mode = "fixed"
    #: 3. workflows: broken = the turn awaits the CRM/calendar call; fixed = the turn emits an event and keeps talking
    workflows: Mode = "fixed"
    #: 4. providers: broken = one provider per role, no breaker; fixed = a breaker per provider and ordered fallbacks
    providers: Mode = "fixed"
    #: 5. memory: broken = per-call buffers kept, nothing watches RSS; fixed = released at call end, RSS monitored
    #: against a budget (alert 80 %, graceful drain 85 %)
    memory: Mode = "fixed"
    #: 6. tool calls: broken = run the tool, then speak; fixed = a filler and the tool in parallel for slow tools
    tools: Mode = "fixed"


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
    #: the telephony provider and transport (safeguard 2, fixed: the telephony format follows from it, and
    #: ``telephony_audio``, when set, must agree with it).
    telephony: TelephonyConfig = Field(default_factory=TelephonyConfig)
    #: whether the runtime converts between the telephony, STT and TTS formats (G.711/PCM codecs, soxr
    #: resampling). ``false``: audio passes through as bytes, so STT and TTS must use the telephony format itself.
    transcoding: bool = True
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
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
