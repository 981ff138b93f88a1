"""Typed scenario models, in the experiment vocabulary: target, callers, script (the method), limits, targets
(the steady-state hypothesis). A scenario is validated whole before anything starts; an error names the file, the field
path and the reason (``demo.yaml: script[2].say.think_time: must be >= 0``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.chaos.faults import DEPENDENCIES, Fault
from harness.load.shapes import LoadShape


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioError(ValueError):
    """A scenario that cannot run. ``problems`` lists ``(field path, reason)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {path}: {reason}" if path else f"{source}: {reason}" for path, reason in problems]
        super().__init__("\n".join(lines))


# --- target -----------------------------------------------------------------------------------------------------------


class EmbeddedTarget(Model):
    """The reference runtime and the fake providers, started by the harness as subprocesses on loopback."""

    agent: str = Field("agents/dental.yaml", description="agent definition (dialog + scripted LLM), relative to "
                                                         "the scenario file")
    capacity: int = Field(50, ge=1, description="calls one runtime process accepts at once")
    providers: dict[str, Any] = Field(default_factory=dict, description="fake provider settings (latency...)")
    runtime: dict[str, Any] = Field(default_factory=dict, description="extra reference-runtime settings")
    memory_limit_mb: float | None = Field(None, gt=0, description="the runtime's hard memory limit, enforced as a "
                                                                 "container's would be: above it the process is "
                                                                 "killed (OOM) and restarted")
    memory_headroom_mb: float | None = Field(None, gt=0, description="the same limit, set as this much above the "
                                                                     "runtime's RSS once it has started (a limit "
                                                                     "that fits any machine's baseline)")


class WebhookTarget(Model):
    """A voice webhook (Twilio's Voice URL): the caller POSTs a signed form and follows the TwiML it gets back."""

    url: str
    auth_token: str = Field("voicechaos-test-token", description="the Twilio auth token the runtime checks "
                                                                 "X-Twilio-Signature with")


class WebSocketTarget(Model):
    """A Media Streams websocket URL dialled directly (no webhook)."""

    url: str
    parameters: dict[str, str] = Field(default_factory=dict, description="sent as start.customParameters")


class WebRtcTarget(Model):
    """WebRTC signalling: the URL the caller POSTs its SDP offer to (``{"sdp", "type"}``, answered the same way; the
    shape of Pipecat's SmallWebRTC ``/api/offer``)."""

    url: str


class Target(Model):
    embedded: EmbeddedTarget | None = None
    webhook: WebhookTarget | None = None
    websocket: WebSocketTarget | None = None
    webrtc: WebRtcTarget | None = None

    @model_validator(mode="after")
    def _one_per_transport(self) -> Target:
        chosen = [name for name in ("embedded", "webhook", "websocket", "webrtc") if getattr(self, name) is not None]
        phone = [name for name in ("webhook", "websocket") if name in chosen]
        if not chosen:
            raise ValueError("choose embedded, or a phone target (webhook or websocket) and/or webrtc (got none)")
        if self.embedded is not None and len(chosen) > 1:
            raise ValueError(f"embedded answers every transport itself: give it alone (got {chosen})")
        if len(phone) > 1:
            raise ValueError(f"choose one of webhook, websocket for the phone callers (got {phone})")
        return self

    def serves(self, transport: str) -> bool:
        if self.embedded is not None:
            return True
        if transport == "webrtc":
            return self.webrtc is not None
        return self.webhook is not None or self.websocket is not None


# --- callers ----------------------------------------------------------------------------------------------------------


Transport = Literal["twilio", "webrtc"]


class CallerGroup(Model):
    """Callers that share a transport. Calls are dealt to groups in proportion to their weights, interleaved
    (weights 1 and 1: twilio, webrtc, twilio, webrtc...), so every group sees the same moments of the run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    transport: Transport = "twilio"
    weight: int = Field(1, ge=1, le=1000)


class Callers(Model):
    count: int = Field(10, ge=1, le=100_000, description="calls to place in the run")
    concurrency: int | None = Field(None, ge=1, description="most calls at once (default: all of them)")
    arrival_rate: float = Field(5.0, gt=0, le=1000, description="new calls per second")
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    transport: Transport = Field("twilio", description="how every caller calls, when there are no groups")
    groups: list[CallerGroup] = Field(default_factory=list, description="callers by transport, e.g. half on the "
                                                                        "phone and half over WebRTC")

    @model_validator(mode="after")
    def _groups_are_distinct(self) -> Callers:
        names = [group.name for group in self.groups]
        for name in set(names):
            if names.count(name) > 1:
                raise ValueError(f"groups: the name {name!r} is used twice")
        return self

    def caller_groups(self) -> list[CallerGroup]:
        return self.groups or [CallerGroup(name=self.transport, transport=self.transport)]

    def group_of(self, call_id: int) -> int:
        """Which group call ``call_id`` belongs to: smooth weighted round robin (the same every run)."""
        weights = [group.weight for group in self.caller_groups()]
        total = sum(weights)
        current = [0] * len(weights)
        chosen = 0
        for _ in range(call_id % total + 1):
            current = [c + w for c, w in zip(current, weights, strict=True)]
            chosen = max(range(len(weights)), key=lambda i: current[i])
            current[chosen] -= total
        return chosen


# --- script (the method) ----------------------------------------------------------------------------------------------

#: one phrase or a list of phrases
Phrases = Annotated[list[str], BeforeValidator(lambda value: [value] if isinstance(value, str) else value)]


class WaitForGreeting(Model):
    kind: Literal["wait_for_greeting"] = "wait_for_greeting"
    expect: Phrases = Field(default_factory=list, description="phrases the greeting should contain, in order")
    timeout: float = Field(10.0, gt=0)


class Say(Model):
    kind: Literal["say"] = "say"
    text: str | None = Field(None, description="phrase audio of this text")
    wav: str | None = Field(None, description="a WAV file to play instead (for runtimes with real STT)")
    think_time: float = Field(0.3, ge=0, description="pause after the agent's turn before speaking")
    barge_in_after: float | None = Field(None, ge=0, description="speak this long after the agent starts its turn, "
                                                                 "interrupting it")
    expect: Phrases = Field(default_factory=list, description="phrases the agent's reply should contain, in order")

    @model_validator(mode="after")
    def _text_or_wav(self) -> Say:
        if (self.text is None) == (self.wav is None):
            raise ValueError("give exactly one of text or wav")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is empty")
        return self


class Dtmf(Model):
    kind: Literal["dtmf"] = "dtmf"
    digits: str = Field(pattern=r"^[0-9*#A-D]+$")
    interval: float = Field(0.25, gt=0)


class Pause(Model):
    kind: Literal["pause"] = "pause"
    seconds: float = Field(ge=0, le=3600)


class HangUp(Model):
    kind: Literal["hang_up"] = "hang_up"


class ExpectHangup(Model):
    """The agent ends the call (its goodbye, then it closes the stream)."""

    kind: Literal["expect_hangup"] = "expect_hangup"
    timeout: float = Field(10.0, gt=0)


Step = Annotated[WaitForGreeting | Say | Dtmf | Pause | HangUp | ExpectHangup, Field(discriminator="kind")]
STEP_KINDS = ("wait_for_greeting", "say", "dtmf", "pause", "hang_up", "expect_hangup")
_SCALAR_FIELD = {"say": "text", "dtmf": "digits", "pause": "seconds", "wait_for_greeting": "expect"}


def _step_from_yaml(raw: Any) -> Any:
    """``{"say": "hi"}`` / ``{"say": {...}, ...}`` / ``"hang_up"`` -> ``{"kind": "say", ...}``."""
    if isinstance(raw, str):
        return {"kind": raw}
    if isinstance(raw, dict) and "kind" not in raw:
        kinds = [key for key in raw if key in _SCALAR_FIELD or key in ("hang_up", "expect_hangup")]
        if len(kinds) != 1:
            return raw  # let the union report the problem
        kind = kinds[0]
        value = raw[kind]
        rest = {k: v for k, v in raw.items() if k != kind}
        if isinstance(value, dict):
            return {"kind": kind, **value, **rest}
        if value is None:
            return {"kind": kind, **rest}
        field = _SCALAR_FIELD.get(kind)
        if field is None:
            return {"kind": kind, "_value": value, **rest}
        return {"kind": kind, field: value, **rest}
    return raw


# --- limits and targets -----------------------------------------------------------------------------------------------


class Limits(Model):
    duration: float = Field(300.0, gt=0, le=7 * 24 * 3600, description="hard bound on the whole run, seconds")
    call_timeout: float = Field(120.0, gt=0, description="hard bound on one call")
    connect_timeout: float = Field(10.0, gt=0)
    reply_timeout: float = Field(8.0, gt=0, description="no audible reply this long after the caller stops: "
                                                        "the turn failed")
    end_of_turn_silence: float = Field(3.5, gt=0, description="without expected phrases, this much silence ends "
                                                              "the agent's turn (longer than any dead air measured)")
    settle: float = Field(0.4, ge=0, description="with expected phrases all heard, this much silence ends the turn")
    recordings_wait: float = Field(10.0, ge=0, le=3600, description="after the last call, how long to wait for "
                                                                    "recordings still being uploaded before counting "
                                                                    "the bucket")


class Targets(Model):
    """Thresholds a run is judged against (defaults from mission.md's caller-side figures)."""

    response_latency_p95_ms: float = Field(800.0, gt=0)
    dead_air_ms: float = Field(1500.0, gt=0, description="a silence gap inside an agent turn longer than this fails")
    broken_silence_ms: float = Field(3000.0, gt=0, description="a gap this long means the call feels broken")
    call_success_rate: float = Field(0.999, ge=0, le=1, description="share of calls that complete")
    phrase_decode_rate: float = Field(1.0, ge=0, le=1, description="share of agent phrases that decode (no garbled "
                                                                   "audio)")
    audio_quality: float = Field(0.99, ge=0, le=1, description="share of the agent's phrase audio that arrived "
                                                               "intact (symbols read clearly)")
    expected_phrase_rate: float = Field(1.0, ge=0, le=1, description="share of turns with expected phrases in "
                                                                     "which the agent said them")
    barge_in_reaction_p95_ms: float = Field(1000.0, gt=0)
    worker_availability: float = Field(0.999, ge=0, le=1, description="share of new calls the platform answered "
                                                                      "(not refused, greeting heard)")
    recordings_lost: int = Field(0, ge=0, description="calls whose recording never reached object storage")
    harness_lateness_p99_ms: float = Field(5.0, gt=0, description="above this the harness, not the agent, was the "
                                                                  "bottleneck: the run is invalid")
    # The runtime's side (mission.md, "Target metrics"): judged from its /metrics readings when it exports them.
    memory_usage_pct: float = Field(80.0, gt=0, description="peak RSS, in % of the runtime's memory budget")
    cpu_usage_pct: float = Field(70.0, gt=0, description="P95 of the runtime's CPU use per reading, % of one core")
    active_calls_pct: float = Field(80.0, gt=0, description="peak active calls, in % of the worker's capacity")
    packet_loss_pct: float = Field(1.0, ge=0, description="media packets lost on the caller's leg")
    jitter_ms: float = Field(30.0, gt=0, description="media jitter on the caller's leg")
    stt_latency_p95_ms: float = Field(150.0, gt=0, description="audio sent to the STT provider's first transcript")
    tts_latency_p95_ms: float = Field(150.0, gt=0, description="text sent to the TTS provider's first audio byte")
    breaker_trips_per_hour: float = Field(5.0, ge=0, description="provider circuit-breaker trips per hour of run")
    workflow_failure_rate: float = Field(0.05, ge=0, le=1, description="workflow events given up / all")
    event_emission_p95_ms: float = Field(10.0, gt=0, description="time a turn spends emitting a workflow event")


class DependencyRef(Model):
    """A dependency of a runtime the harness did not start: the Toxiproxy proxy in front of it, and the fault
    control API of the fake behind it (if it is a voicechaos fake)."""

    proxy: str = Field(description="the name of its proxy on the Toxiproxy server")
    control_url: str | None = Field(None, description="the fake's fault control API (http://host:port/_chaos)")


class Chaos(Model):
    """Where faults go when the target is not the embedded stack (the embedded stack wires all of this itself)."""

    toxiproxy_url: str | None = Field(None, description="the Toxiproxy API (default: $TOXIPROXY_URL)")
    runtime_metrics_url: str | None = Field(None, description="the runtime's Prometheus /metrics, read at each "
                                                              "fault's start and end")
    dependencies: dict[str, DependencyRef] = Field(default_factory=dict)
    storage_url: str | None = Field(None, description="the S3 endpoint the runtime uploads recordings to; the "
                                                      "harness creates the bucket and counts what arrived")
    storage_bucket: str = "voicechaos-recordings"


_CHECK = re.compile(r"^\s*(<=|>=|==|<|>)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


class Check(Model):
    """What one side of an incident must show: ``metric`` compared with a number, e.g. ``"< 0.999"``."""

    metric: str
    broken: str | None = Field(None, description="what the broken runtime must show, e.g. '< 0.999'")
    fixed: str | None = Field(None, description="what the fixed runtime must show, e.g. '>= 0.999'")

    @field_validator("broken", "fixed")
    @classmethod
    def _comparison(cls, value: str | None) -> str | None:
        if value is not None and not _CHECK.match(value):
            raise ValueError(f"{value!r} is not a comparison like '< 0.999' or '== 0'")
        return value

    @staticmethod
    def holds(expression: str, measured: float | None) -> bool | None:
        """Whether ``measured`` satisfies ``expression``; None when nothing was measured (never a pass)."""
        if measured is None:
            return None
        match = _CHECK.match(expression)
        assert match is not None
        op, number = match.group(1), float(match.group(2))
        return {"<": measured < number, "<=": measured <= number, ">": measured > number,
                ">=": measured >= number, "==": measured == number}[op]


class Incident(Model):
    """A scenario that reproduces a public incident, run twice by ``voicechaos incident``: with the safeguard
    broken (it must show the failure) and fixed (it must hold)."""

    title: str
    safeguard: Literal["recording", "encoding", "workflows", "providers", "memory", "tools"]
    checks: list[Check] = Field(min_length=1)
    broken: dict[str, Any] = Field(default_factory=dict, description="scenario overrides for the broken run")
    fixed: dict[str, Any] = Field(default_factory=dict, description="scenario overrides for the fixed run")
    quick: dict[str, Any] = Field(default_factory=dict, description="scenario overrides for --quick")
    mismatched_config: dict[str, Any] | None = Field(
        None, description="runtime settings that make the audio formats incompatible: each side also starts a "
                          "runtime with them and records whether its start refused (figure "
                          "mismatched_config_refused)")


class Scenario(Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    target: Target = Field(default_factory=lambda: Target(embedded=EmbeddedTarget()))
    callers: Callers = Field(default_factory=Callers)
    load: LoadShape | None = Field(None, description="how many calls are in flight over the run under the Locust "
                                                     "engine (harness.load.shapes); default: a ramp to callers' "
                                                     "concurrency at their arrival_rate, held to limits.duration")
    script: list[Step] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    targets: Targets = Field(default_factory=Targets)
    faults: list[Fault] = Field(default_factory=list, description="the fault timeline (harness.chaos.faults)")
    chaos: Chaos = Field(default_factory=Chaos)
    incident: Incident | None = None
    seed: int = 1

    @field_validator("script", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        return [_step_from_yaml(step) for step in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _faults_fit_the_run(self) -> Scenario:
        for name in self.chaos.dependencies:
            if name not in DEPENDENCIES:
                raise ValueError(f"chaos.dependencies: unknown dependency {name!r}; one of {', '.join(DEPENDENCIES)}")
        for index, fault in enumerate(self.faults):
            if fault.impairment is not None and not any(
                    g.transport == "webrtc" for g in self.callers.caller_groups()):
                raise ValueError(f"faults[{index}].impairment: it acts on WebRTC callers' media, and this scenario "
                                 "has none (callers.transport or callers.groups)")
            if self.target.embedded is None and fault.impairment is None:
                ref = self.chaos.dependencies.get(fault.target)
                if ref is None:
                    raise ValueError(f"faults[{index}].target: {fault.target!r} is not in chaos.dependencies (the "
                                     "embedded stack wires its dependencies itself; another target must name them)")
                if fault.provider is not None and ref.control_url is None:
                    raise ValueError(f"faults[{index}].provider: chaos.dependencies.{fault.target} has no "
                                     "control_url")
            if fault.at >= self.limits.duration:
                raise ValueError(f"faults[{index}].at: {fault.at:g} s is not within the run "
                                 f"(limits.duration {self.limits.duration:g} s)")
        return self

    @model_validator(mode="after")
    def _load_fits_the_run(self) -> Scenario:
        # limits.duration is the hard bound on the run: a longer shape would be cut without anyone having asked.
        if self.load is not None and self.load.total_s > self.limits.duration:
            raise ValueError(f"load: the {self.load.shape} shape lasts {self.load.total_s:g} s, longer than the run "
                             f"(limits.duration {self.limits.duration:g} s)")
        return self

    @model_validator(mode="after")
    def _callers_have_a_way_in(self) -> Scenario:
        for index, group in enumerate(self.callers.groups or [None]):
            transport = group.transport if group is not None else self.callers.transport
            where = f"callers.groups[{index}].transport" if group is not None else "callers.transport"
            if not self.target.serves(transport):
                need = ("target.webrtc (the offer URL)" if transport == "webrtc"
                        else "target.webhook or target.websocket")
                raise ValueError(f"{where}: {transport} callers need {need}, or the embedded target")
            if transport == "webrtc":
                for step_index, step in enumerate(self.script):
                    if isinstance(step, Dtmf):
                        raise ValueError(f"script[{step_index}]: dtmf cannot be sent over WebRTC (aiortc has no "
                                         f"RFC 4733 events), and {where} is webrtc")
        return self

    @model_validator(mode="after")
    def _barge_in_needs_a_turn(self) -> Scenario:
        for index, step in enumerate(self.script):
            if isinstance(step, Say) and step.barge_in_after is not None:
                before = self.script[index - 1] if index else None
                if not isinstance(before, (Say, WaitForGreeting)):
                    raise ValueError(f"script[{index}]: barge_in_after needs an agent turn right before it "
                                     "(a say or wait_for_greeting step)")
        return self


# --- loading ----------------------------------------------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after", "function-before", "function-wrap"):
            out += f".{part}" if out else str(part)
    return out


def scenario_from_mapping(data: Any, source: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(source, [("", f"a scenario is a mapping, got {type(data).__name__}")])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            elif err["type"] in ("union_tag_not_found", "union_tag_invalid"):
                reason = f"not a step; a step is one of {', '.join(STEP_KINDS)}"
            problems.append((_path(tuple(err["loc"])), reason))
        raise ScenarioError(source, problems) from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(str(path), [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(str(path), [("", f"{where}not valid YAML ({getattr(exc, 'problem', exc)})")]) from None
    return scenario_from_mapping(data, str(path))
