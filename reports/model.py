"""What the report works on: a run folder read back into tables (see RUN_FOLDER.md for the files and columns).

Times are seconds after the load started (``*_s``), on the harness's clock, so the callers' records, the runtime's
metrics readings and the fault timeline share one axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# Verdicts of one target. ``tracked``: a figure the mission asks to follow with no threshold (never fails).
PASS, FAIL, NOT_MEASURED, TRACKED = "pass", "fail", "not_measured", "tracked"

# The four stacks of the triage (mission.md, "4-stack incident triage"), and the harness's own failures.
TELEPHONY, VOICE_CORE, ORCHESTRATION, WORKFLOW, HARNESS = (
    "Telephony/Audio", "Voice Core", "Orchestration", "Workflow", "Harness")
STACKS = (TELEPHONY, VOICE_CORE, ORCHESTRATION, WORKFLOW)

CALL_COLUMNS = ("call_id", "call_sid", "outcome", "reason", "start_s", "end_s", "connect_ms", "duration_s",
                "answered", "turns", "heard", "undecodable", "protocol_errors", "close_code", "event_line",
                "transport", "group", "concealed_ms", "rtp_packets_received", "rtp_packets_lost", "rtp_jitter_ms")
TURN_COLUMNS = ("call_id", "index", "step", "kind", "status", "caller_text", "at_s", "response_latency_ms",
                "first_audio", "max_gap_ms", "gaps", "heard", "undecodable", "has_expected", "barge_in",
                "barge_in_reaction_ms", "cut_phrases", "audio_symbols", "audio_symbols_clear",
                "concealed_ms")
GAP_COLUMNS = ("call_id", "turn_index", "at_s", "gap_ms")


@dataclass(frozen=True)
class FaultWindow:
    """One fault of the timeline as it happened: ``end_s`` None means it was still applied when the run ended."""

    label: str
    target: str
    start_s: float
    end_s: float | None
    error: str | None = None


@dataclass
class RuntimeSeries:
    """The runtime's ``/metrics`` readings over the run (``runtime_metrics.jsonl``).

    ``frame``: one row per reading, indexed by ``t`` (seconds after the load started), one column per series key
    ``name{label="v",...}`` (histogram buckets left out: they are in ``first`` and ``last``).
    ``first``/``last``: every sample of the first and the last reading, buckets included (quantiles over the run).
    """

    frame: pd.DataFrame
    first: dict[str, float]
    last: dict[str, float]


@dataclass
class RunData:
    run_dir: Path
    calls: pd.DataFrame  # CALL_COLUMNS, one row per call that ended (or was still running when the run stopped)
    turns: pd.DataFrame  # TURN_COLUMNS, one row per agent turn
    gaps: pd.DataFrame  # GAP_COLUMNS, one row per silence gap inside an agent turn
    summary: dict[str, Any] | None = None  # summary.json as the harness wrote it (None if the run never finished)
    config: dict[str, Any] | None = None  # the scenario as run (targets, safeguards, faults...)
    runtime: RuntimeSeries | None = None
    faults: list[FaultWindow] = field(default_factory=list)
    duration_s: float | None = None  # from the load's start to its end
    lateness: dict[str, Any] | None = None  # the harness's own send lateness (p50_ms, p99_ms, max_ms, frames)
    recordings: dict[str, Any] | None = None  # what the harness counted in the object store
    missing: list[str] = field(default_factory=list)  # inputs that could not be read, said in words

    @property
    def name(self) -> str:
        return str((self.summary or {}).get("scenario") or (self.config or {}).get("name") or self.run_dir.name)


@dataclass
class TargetRow:
    """One line of the targets table (and one JUnit test case)."""

    group: str  # worker health, audio quality, provider health, workflow isolation, caller experience, harness
    metric: str  # machine name, e.g. response_latency_p95_ms
    title: str  # what a person reads, e.g. "Response latency P95"
    target: str  # e.g. "<= 800 ms", or "tracked"
    alert: str | None  # the alert threshold, e.g. "300 ms", when the mission gives one
    measured: float | None
    unit: str  # "ms", "%", "" ...
    verdict: str  # PASS | FAIL | NOT_MEASURED | TRACKED
    note: str = ""  # how it was measured, or why it could not be
    alerting: bool = False  # past the alert threshold
    lower_is_better: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "metric": self.metric, "title": self.title, "target": self.target,
                "alert": self.alert, "measured": self.measured, "unit": self.unit, "verdict": self.verdict,
                "note": self.note, "alerting": self.alerting, "lower_is_better": self.lower_is_better}


@dataclass
class TriageItem:
    """One failed call or failed turn, routed to a stack by the symptom the harness measured."""

    stack: str
    symptom: str  # e.g. "garbled audio", "dead air", "dropped call"
    call_id: int
    turn_index: int | None
    detail: str
    event_line: int | None  # the call's line in events.jsonl


@dataclass
class Plot:
    title: str
    png: bytes
    caption: str = ""
