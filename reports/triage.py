"""4-stack triage (mission.md): every failed call and failed turn routed to the layer its symptom points at.

The route is taken from what the harness measured on the caller's side (garbled audio, a dropped call, no reply,
dead air...), never guessed from the mode the runtime ran in. The runtime's own figures are added as evidence next
to each stack (a workflow emission that takes seconds says why turns were slow), not used to move a failure.
Counting is done on whole columns, so a run of a million turns costs the same handful of passes; only the examples
become objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from harness.runtime_metrics import total
from harness.scenario import Targets
from reports.metrics import run_samples
from reports.model import (
    HARNESS,
    ORCHESTRATION,
    STACKS,
    TELEPHONY,
    VOICE_CORE,
    WORKFLOW,
    RunData,
    TargetRow,
    TriageItem,
)

EXAMPLES = 5
HIGH_LATENCY_MS = 1000.0  # mission.md's triage: "high latency (> 1 s)" is a Voice Core symptom

DEBUG_STEPS = {
    TELEPHONY: ["Check the audio encoding on both sides: Twilio PSTN streams μ-law 8 kHz, WebRTC PCM 16 kHz "
                "(`voicechaos runtime check-config`).",
                "Check the sample rate the runtime sends back and the media messages' payloads.",
                "Check network latency and resets on the caller's leg, and the telephony provider's logs; on "
                "WebRTC, the packet loss and jitter rows (the receivers' RTCP figures) and the caller leg's "
                "impairment in the fault table.",
                "For calls never answered: the runtime's worker availability (/readyz, active calls against "
                "capacity, workers blocked on I/O)."],
    VOICE_CORE: ["Check the STT and TTS providers' status and latency (the provider plot), and their error counters.",
                 "Check VAD and endpointing thresholds, and the barge-in logic.",
                 "Replay the conversation from the event stream: the example calls below link to their records."],
    ORCHESTRATION: ["Check the objective graph: which step the agent was on and which it should have been on.",
                    "Read the event stream of the example calls: the expected phrase against what was heard.",
                    "Check state transitions (confirmations skipped, a step repeated)."],
    WORKFLOW: ["Check the workflow worker's logs and the workflow API's responses (the CRM fake records every "
               "request).",
               "Check that the event triggers fired (runtime_workflow_events_total) and the retries and drops.",
               "For recordings: the spool, the uploader's breaker and the object store."],
    HARNESS: ["Not the agent's failure: the harness errored or stopped before the call ended. Read the call's "
              "reason and the harness's console."],
}


@dataclass
class StackTriage:
    stack: str
    failures: int = 0  # failed calls plus failed turns
    calls: int = 0  # distinct calls with at least one of them
    symptoms: dict[str, int] = field(default_factory=dict)
    examples: list[TriageItem] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def debug_steps(self) -> list[str]:
        return DEBUG_STEPS[self.stack]

    def to_json(self) -> dict[str, object]:
        return {"stack": self.stack, "failures": self.failures, "calls": self.calls, "symptoms": self.symptoms,
                "examples": [vars(e) for e in self.examples], "evidence": self.evidence}


def _symptoms(data: RunData, targets: Targets) -> list[tuple[str, str, pd.DataFrame, Callable[[pd.Series], str]]]:
    """(stack, symptom, the failing rows, how to describe one) for calls then turns; a turn counts once, under its
    first symptom in this order."""
    calls, turns = data.calls, data.turns
    outcome = calls["outcome"]
    taken = pd.Series(False, index=turns.index)
    # a turn whose audio came through a leg that lost packets, and arrived less than whole: whatever it looks like
    # next (a missing expected phrase, a cut), the leg is the first suspect
    lossy_calls = set(calls.loc[calls["rtp_packets_lost"].fillna(0) > 0, "call_id"])
    lossy = turns["call_id"].isin(lossy_calls) & ((turns["audio_symbols_clear"] < turns["audio_symbols"])
                                                  | (turns["concealed_ms"] > 0))

    def turn_rule(mask: pd.Series) -> pd.DataFrame:
        nonlocal taken
        mask = mask & ~taken
        taken = taken | mask
        return turns[mask]

    on_lossy_leg = calls["call_id"].isin(lossy_calls)
    turn_on_lossy_leg = turns["call_id"].isin(lossy_calls)
    return [
        (TELEPHONY, "call not answered", calls[outcome.isin(["rejected", "failed_to_connect"]) | ~calls["answered"]],
         lambda r: f"{r['outcome']}: {r['reason']}"),
        (TELEPHONY, "dropped call", calls[outcome == "dropped"], lambda r: str(r["reason"])),
        # the agent may not have understood a caller whose audio it got damaged: the leg is the first suspect
        (TELEPHONY, "call on a lossy leg timed out", calls[(outcome == "timed_out") & on_lossy_leg],
         lambda r: f"{r['reason']} ({r['rtp_packets_lost']:.0f} of the agent's RTP packets lost on the way)"),
        (VOICE_CORE, "call timed out", calls[(outcome == "timed_out") & ~on_lossy_leg], lambda r: str(r["reason"])),
        (HARNESS, "harness error", calls[outcome.isin(["error", "unfinished"])],
         lambda r: f"{r['outcome']}: {r['reason']}"),
        (TELEPHONY, "garbled audio", turn_rule((turns["status"] == "garbled") | (turns["undecodable"] > 0)),
         lambda r: f"{r['undecodable']} undecodable phrase(s), {r['heard']} decoded"
                   + (f"; {r['audio_symbols_clear'] / r['audio_symbols']:.0%} of the audio intact"
                      if r["audio_symbols"] else "")),
        (TELEPHONY, "audio lost on the caller's leg", turn_rule(lossy & (turns["status"] != "ok")),
         lambda r: (f"{r['audio_symbols_clear'] / r['audio_symbols']:.0%} of the phrases' symbols intact, "
                    if r["audio_symbols"] else "") + f"{r['concealed_ms']:.0f} ms of the turn concealed on a WebRTC "
                   "leg that lost packets"),
        (TELEPHONY, "agent audio cut off", turn_rule(turns["status"] == "cut_off"),
         lambda r: "the call ended while the agent's turn was incomplete"),
        (TELEPHONY, "no response on a lossy leg", turn_rule(turn_on_lossy_leg & (turns["status"] == "no_response")),
         lambda r: f"no agent audio after {_said(r)}, on a WebRTC leg that lost packets"),
        (VOICE_CORE, "no response", turn_rule(turns["status"] == "no_response"),
         lambda r: f"no agent audio after {_said(r)}"),
        (VOICE_CORE, "dead air", turn_rule(turns["max_gap_ms"] > targets.dead_air_ms),
         lambda r: f"{r['max_gap_ms']:.0f} ms of silence inside the agent's turn"),
        (VOICE_CORE, "high latency", turn_rule((turns["kind"] == "reply")
                                               & (turns["response_latency_ms"] > HIGH_LATENCY_MS)),
         lambda r: f"{r['response_latency_ms']:.0f} ms to the first agent audio after {_said(r)}"),
        (VOICE_CORE, "barge-in not handled", turn_rule(turns["barge_in"] & (
            turns["barge_in_reaction_ms"].isna() | (turns["barge_in_reaction_ms"] > targets.barge_in_reaction_p95_ms))),
         lambda r: "no clear after the caller spoke over the agent" if pd.isna(r["barge_in_reaction_ms"])
         else f"clear after {r['barge_in_reaction_ms']:.0f} ms"),
        (ORCHESTRATION, "wrong or missing objective", turn_rule(turns["status"] == "mismatch"),
         lambda r: f"the agent did not say what step {r['step']} expected after {_said(r)}"),
    ]


def _said(row: pd.Series) -> str:
    text = row.get("caller_text")
    return f"'{text}'" if isinstance(text, str) and text else "the greeting's start"


def triage(data: RunData, rows: list[TargetRow], targets: Targets) -> list[StackTriage]:
    stacks = {name: StackTriage(name) for name in (*STACKS, HARNESS)}
    lines = dict(zip(data.calls["call_id"], data.calls["event_line"], strict=False))
    affected: dict[str, set[int]] = {name: set() for name in stacks}
    for stack, symptom, failing, describe in _symptoms(data, targets):
        if failing.empty:
            continue
        entry = stacks[stack]
        entry.failures += len(failing)
        entry.symptoms[symptom] = entry.symptoms.get(symptom, 0) + len(failing)
        affected[stack].update(int(c) for c in failing["call_id"].unique())
        is_turn = "index" in failing.columns
        for _, row in failing.head(max(0, EXAMPLES - len(entry.examples))).iterrows():
            call_id = int(row["call_id"])
            entry.examples.append(TriageItem(stack=stack, symptom=symptom, call_id=call_id,
                                             turn_index=int(row["index"]) if is_turn else None,
                                             detail=describe(row), event_line=_line(lines.get(call_id))))
    for name, ids in affected.items():
        stacks[name].calls = len(ids)
    _workflow_failures(stacks[WORKFLOW], data, rows)
    _evidence(stacks, rows)
    return [s for s in stacks.values() if s.stack in STACKS or s.failures]


def _line(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)  # type: ignore[arg-type]


def _workflow_failures(entry: StackTriage, data: RunData, rows: list[TargetRow]) -> None:
    """Workflow failures are not on the caller's side of the wire: they come from the runtime's and the object
    store's counts (events given up, recordings missing)."""
    lost = next((r for r in rows if r.metric == "recordings_lost"), None)
    if lost is not None and lost.measured:
        entry.failures += int(lost.measured)
        entry.symptoms["recording not stored"] = int(lost.measured)
    if data.runtime is None:
        return
    samples, _ = run_samples(data.runtime)
    failed = int(total(samples, "runtime_workflow_events_total", outcome="failed") or 0)
    dropped = int(total(samples, "runtime_workflow_dropped_total") or 0)
    if failed + dropped:
        entry.failures += failed + dropped
        entry.symptoms["workflow event not delivered"] = failed + dropped


def _evidence(stacks: dict[str, StackTriage], rows: list[TargetRow]) -> None:
    by = {r.metric: r for r in rows}

    def note(stack: str, metric: str, text: str) -> None:
        row = by.get(metric)
        if row is not None and row.measured is not None:
            stacks[stack].evidence.append(text.format(v=row.measured, target=row.target, verdict=row.verdict))

    note(TELEPHONY, "encoding_compatibility_pct", "encoding compatibility {v:g} % ({verdict})")
    note(TELEPHONY, "packet_loss_pct", "packet loss on the WebRTC callers' leg {v:g} % (target {target}: {verdict})")
    note(TELEPHONY, "jitter_ms", "jitter on the WebRTC callers' leg P95 {v:g} ms (target {target}: {verdict})")
    note(TELEPHONY, "audio_quality", "agent audio intact {v:g} (target {target}: {verdict})")
    note(TELEPHONY, "worker_availability", "worker availability {v:g} (target {target}: {verdict})")
    note(VOICE_CORE, "stt_latency_p95_ms", "STT latency P95 {v:g} ms (target {target}: {verdict})")
    note(VOICE_CORE, "tts_latency_p95_ms", "TTS latency P95 {v:g} ms (target {target}: {verdict})")
    note(VOICE_CORE, "breaker_trips_per_hour", "circuit-breaker trips {v:g}/h (target {target}: {verdict})")
    note(WORKFLOW, "event_emission_p95_ms",
         "workflow event emission P95 {v:g} ms (target {target}: {verdict}): above it, turns wait on workflows and "
         "their slow turns above are the workflow's doing")
    note(WORKFLOW, "workflow_failure_rate", "workflow failure rate {v:g} (target {target}: {verdict})")
