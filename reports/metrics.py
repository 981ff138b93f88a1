"""Judge a run folder against every target: the mission's production metrics (from the runtime's /metrics readings)
and the caller-side ones (from the call records). A metric with no data is ``not_measured`` and says why; it never
passes by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.runtime_metrics import histogram_quantile, total
from harness.scenario import Targets
from reports.model import FAIL, NOT_MEASURED, PASS, TRACKED, RunData, RuntimeSeries, TargetRow
from reports.series import memory_growth

CALLER, WORKER, AUDIO, PROVIDER, WORKFLOW_ISOLATION, HARNESS_GROUP = (
    "caller experience", "worker health", "audio quality", "provider health", "workflow isolation", "harness")


def targets_of(data: RunData) -> Targets:
    """The scenario's targets (defaults for a run that recorded none, or a field this version does not know)."""
    raw = ((data.config or {}).get("targets")) or {}
    known = {k: v for k, v in raw.items() if k in Targets.model_fields}
    return Targets.model_validate(known)


def p(values: pd.Series | np.ndarray, q: float) -> float | None:
    """Percentile as the harness computes it (numpy's linear interpolation), rounded to 0.1; None if empty."""
    array = np.asarray(values, dtype=float)
    array = array[~np.isnan(array)]
    return round(float(np.percentile(array, q)), 1) if array.size else None


def _row(group: str, metric: str, title: str, measured: float | None, target: float | None, *, unit: str = "",
         lower_is_better: bool = True, alert: float | None = None, note: str = "", equal: bool = False) -> TargetRow:
    shown_unit = f" {unit}" if unit and unit != "%" else unit
    if target is None:
        verdict = NOT_MEASURED if measured is None else TRACKED
        target_text = "tracked"
    else:
        op = "==" if equal else "<=" if lower_is_better else ">="
        target_text = f"{op} {target:g}{shown_unit}"
        if measured is None:
            verdict = NOT_MEASURED
        elif equal:
            verdict = PASS if math.isclose(measured, target) else FAIL
        else:
            verdict = PASS if (measured <= target if lower_is_better else measured >= target) else FAIL
    alerting = False
    if alert is not None and measured is not None:
        alerting = measured >= alert if lower_is_better else measured <= alert
    return TargetRow(group=group, metric=metric, title=title, target=target_text,
                     alert=None if alert is None else f"{alert:g}{shown_unit}", measured=measured, unit=unit,
                     verdict=verdict, note=note, alerting=alerting, lower_is_better=lower_is_better)


# ---- the caller's side ---------------------------------------------------------------------------------------------

def caller_rows(data: RunData, targets: Targets) -> list[TargetRow]:
    calls, turns = data.calls, data.turns
    n = len(calls)
    outcomes = calls["outcome"].value_counts().sort_index() if n else pd.Series(dtype=int)
    completed = int(outcomes.get("completed", 0))
    answered = int(calls["answered"].sum()) if n else 0
    replies = turns[turns["kind"] == "reply"]
    latency = replies["response_latency_ms"].dropna()
    heard_turns = turns[turns["first_audio"]]
    max_gap = round(float(heard_turns["max_gap_ms"].max()), 1) if len(heard_turns) else None
    dead_air = int((heard_turns["max_gap_ms"] > targets.dead_air_ms).sum())
    broken = int((heard_turns["max_gap_ms"] > targets.broken_silence_ms).sum())
    heard, undecodable = int(turns["heard"].sum()), int(turns["undecodable"].sum())
    symbols, symbols_clear = int(turns["audio_symbols"].sum()), int(turns["audio_symbols_clear"].sum())
    concealed_in_turns = float(turns["concealed_ms"].sum()) if len(turns) else 0.0
    expected = turns[turns["has_expected"] & (turns["status"] != "interrupted")]
    expected_ok = int((expected["status"] == "ok").sum())
    barge = turns[turns["barge_in"]]
    reactions = barge["barge_in_reaction_ms"].dropna()
    recordings = data.recordings
    lost = None
    if recordings is not None and recordings.get("listing_error") is None and "missing" in recordings:
        lost = int(recordings["missing"])
    return [
        _row(CALLER, "call_success_rate", "Calls completed", round(completed / n, 4) if n else None,
             targets.call_success_rate, lower_is_better=False,
             note=", ".join(f"{k}: {v}" for k, v in outcomes.items()) if n else "no call was placed"),
        _row(WORKER, "worker_availability", "Worker availability (new calls answered)",
             round(answered / n, 4) if n else None, targets.worker_availability, lower_is_better=False,
             note=f"{answered}/{n} new calls answered (not refused, greeting heard)"),
        _row(WORKER, "recordings_lost", "Recordings lost", lost, targets.recordings_lost,
             note="no object store in this run" if recordings is None else
             f"listing failed: {recordings.get('listing_error')}" if lost is None else
             f"{recordings.get('arrived')}/{recordings.get('calls_with_media')} recordings in the bucket"),
        _row(CALLER, "response_latency_p95_ms", "Response latency P95", p(latency, 95),
             targets.response_latency_p95_ms, unit="ms",
             note=f"{len(latency)} replies, end of caller speech to first audible agent audio; p50 "
                  f"{p(latency, 50)} ms"),
        _row(CALLER, "max_silence_gap_ms", "Longest silence inside an agent turn", max_gap, targets.dead_air_ms,
             unit="ms", alert=targets.broken_silence_ms,
             note=f"{dead_air} turns with dead air > {targets.dead_air_ms:g} ms, {broken} > "
                  f"{targets.broken_silence_ms:g} ms (the call feels broken)"),
        _row(AUDIO, "phrase_decode_rate", "Agent phrases decoded (no garbled audio)",
             round(heard / (heard + undecodable), 4) if heard + undecodable else None, targets.phrase_decode_rate,
             lower_is_better=False, note=f"{heard} phrases decoded, {undecodable} undecodable (garbled)"),
        _row(AUDIO, "audio_quality", "Agent audio that arrived intact",
             round(symbols_clear / symbols, 4) if symbols else None, targets.audio_quality, lower_is_better=False,
             note=(f"{symbols_clear}/{symbols} symbols of the agent's phrases read clearly (lost or garbled "
                   "stretches lower it; a phrase cut by a barge-in does not count)" if symbols
                   else "no phrase of the agent was recognised")
             + (f"; {concealed_in_turns / 1000:.1f} s of the agent's turns lost on the way and concealed"
                if concealed_in_turns else "")),
        _row(CALLER, "expected_phrase_rate", "Turns that said what was expected",
             round(expected_ok / len(expected), 4) if len(expected) else None, targets.expected_phrase_rate,
             lower_is_better=False, note=f"{expected_ok}/{len(expected)} turns said what the script expected"),
        _row(CALLER, "barge_in_reaction_p95_ms", "Barge-in reaction P95", p(reactions, 95),
             targets.barge_in_reaction_p95_ms, unit="ms",
             note=f"{len(reactions)}/{len(barge)} barge-ins got a clear" if len(barge)
             else "no barge-in in the script"),
        encoding_row(data),
        *leg_rows(data, targets),
    ]


def leg_rows(data: RunData, targets: Targets) -> list[TargetRow]:
    """Packet loss and jitter of the agent's audio as the WebRTC callers' receivers counted them (RTCP figures,
    RFC 3550 §6.4.1). A Twilio leg is a websocket over TCP: no packet sequence to count losses on, and audio sent
    faster than real time, so arrival jitter says nothing there."""
    calls = data.calls
    webrtc = calls[calls["rtp_packets_received"].notna()] if len(calls) else calls
    if not len(webrtc):
        return [
            _row(AUDIO, "packet_loss_pct", "Packet loss on the caller's leg", None, targets.packet_loss_pct,
                 unit="%", alert=2.0, note="not measured: no WebRTC call in this run (a Twilio Media Streams leg is "
                                           "a websocket over TCP, with no packet sequence to count losses on)"),
            _row(AUDIO, "jitter_ms", "Jitter on the caller's leg", None, targets.jitter_ms, unit="ms", alert=50.0,
                 note="not measured: no WebRTC call in this run (over a websocket the agent sends audio faster "
                      "than real time, so arrival jitter says nothing; gaps in what is heard are judged above)"),
        ]
    received, lost = float(webrtc["rtp_packets_received"].sum()), float(webrtc["rtp_packets_lost"].sum())
    loss = round(100.0 * lost / (received + lost), 2) if received + lost else None
    jitter = webrtc["rtp_jitter_ms"].dropna()
    concealed = float(webrtc["concealed_ms"].sum())
    return [
        _row(AUDIO, "packet_loss_pct", "Packet loss on the caller's leg", loss, targets.packet_loss_pct, unit="%",
             alert=2.0, note=f"agent audio to {len(webrtc)} WebRTC callers: {lost:.0f} of {received + lost:.0f} "
                             f"RTP packets lost, {concealed / 1000:.1f} s concealed as silence"),
        _row(AUDIO, "jitter_ms", "Jitter on the caller's leg", p(jitter, 95), targets.jitter_ms, unit="ms",
             alert=50.0, note=f"P95 over {len(jitter)} WebRTC calls of the receiver's interarrival jitter; p50 "
                              f"{p(jitter, 50)} ms"),
    ]


def encoding_row(data: RunData) -> TargetRow:
    calls, turns = data.calls, data.turns
    with_audio = calls[(calls["heard"] + calls["undecodable"]) > 0]
    # a phrase recognised by its framing, even one damaged by loss on the way, was in the caller's format: only a
    # format mismatch leaves a call with no phrase recognised at all. A call on a leg that lost packets and left
    # nothing recognisable cannot tell the two apart: it is left out, and counted in the note
    framed = set(turns.loc[turns["audio_symbols"] > 0, "call_id"]) if len(turns) else set()
    recognised = (with_audio["heard"] > 0) | with_audio["call_id"].isin(framed)
    unknown = ~recognised & (with_audio["rtp_packets_lost"].fillna(0) > 0)
    judged = with_audio[~unknown]
    decodable = int(recognised[~unknown].sum())
    measured = round(100.0 * decodable / len(judged), 2) if len(judged) else None
    return _row(AUDIO, "encoding_compatibility_pct", "Encoding compatibility", measured, 100.0, unit="%",
                lower_is_better=False, equal=True,
                note=f"{decodable}/{len(judged)} calls with agent audio were decodable in the caller's format "
                     "(a mismatch makes every phrase of a call unrecognisable; loss on the way only damages them)"
                     + (f"; {int(unknown.sum())} calls on a lossy WebRTC leg with nothing recognisable left out"
                        if unknown.any() else ""))


# ---- the runtime's side --------------------------------------------------------------------------------------------

def run_samples(runtime: RuntimeSeries) -> tuple[dict[str, float], bool]:
    """The whole run's counters and histogram buckets: last reading minus first. When a counter went down (the
    runtime restarted), the last reading alone (since the restart) is used, and the flag says so."""
    first, last = runtime.first, runtime.last
    restarted = any(value < first.get(key, 0.0) - 1e-9 for key, value in last.items()
                    if key.split("{", 1)[0].endswith(("_total", "_bucket", "_count", "_sum")))
    if restarted:
        return dict(last), True
    out = {}
    for key, value in last.items():
        base = key.split("{", 1)[0]
        out[key] = value - first.get(key, 0.0) if base.endswith(("_total", "_bucket", "_count", "_sum")) else value
    return out, False


def _quantile_ms(samples: Mapping[str, float], name: str, q: float = 0.95, **labels: str) -> float | None:
    value = histogram_quantile(samples, name, q, **labels)
    return None if value is None else round(value * 1000, 3)


def _column(runtime: RuntimeSeries, name: str) -> pd.Series | None:
    cols = [c for c in runtime.frame.columns if c.split("{", 1)[0] == name]
    return runtime.frame[cols].sum(axis=1, min_count=1).dropna() if cols else None


def _cpu_percent(runtime: RuntimeSeries) -> pd.Series | None:
    cpu = _column(runtime, "process_cpu_seconds_total")
    if cpu is None or len(cpu) < 2:
        return None
    dt = np.diff(cpu.index.to_numpy(dtype=float))
    used = np.diff(cpu.to_numpy(dtype=float))
    keep = (dt > 0) & (used >= 0)  # a restart resets the counter: that interval says nothing
    return pd.Series(100.0 * used[keep] / dt[keep], index=cpu.index[1:][keep])


def runtime_rows(data: RunData, targets: Targets) -> list[TargetRow]:
    runtime = data.runtime
    if runtime is None:
        why = "not measured: no reading of the runtime's /metrics in this run"
        return [_row(g, m, t, None, target, unit=u, alert=a, lower_is_better=lib, note=why)
                for g, m, t, target, u, a, lib in _RUNTIME_ROWS(targets)]
    samples, restarted = run_samples(runtime)
    since = " (since the runtime's last restart)" if restarted else ""
    rows: list[TargetRow] = []

    def add(*args: Any, **kwargs: Any) -> None:
        rows.append(_row(*args, **kwargs))

    rss, budget = _column(runtime, "runtime_process_resident_memory_bytes"), _column(
        runtime, "runtime_memory_budget_bytes")
    if rss is not None and budget is not None and (budget > 0).any():
        share = (rss / budget.where(budget > 0)).dropna() * 100
        add(WORKER, "memory_usage_pct", "Memory: peak RSS of the budget",
            round(float(share.max()), 1) if len(share) else None, targets.memory_usage_pct, unit="%", alert=80.0,
            note=f"peak {rss.max() / 2**20:.0f} MB of {budget.max() / 2**20:.0f} MB; drain at 85 %")
    else:
        add(WORKER, "memory_usage_pct", "Memory: peak RSS of the budget", None, targets.memory_usage_pct, unit="%",
            alert=80.0, note="not measured: the runtime exports no memory budget (memory.budget_mb)"
            + (f"; peak RSS {rss.max() / 2**20:.0f} MB" if rss is not None and len(rss) else ""))
    growth = memory_growth(runtime)
    fitted = (f"{growth.readings} readings from {growth.fit_from_s:g} s to {growth.fit_to_s:g} s"
              if growth.fit_from_s is not None and growth.fit_to_s is not None else "too few readings to fit")
    if growth.segments > 1:
        fitted += f"; the runtime restarted {growth.segments - 1} time(s): the longest stretch is fitted"
    if growth.fit_from_s is not None and growth.fit_to_s is not None and growth.fit_to_s - growth.fit_from_s < 600:
        fitted += "; a short run, where the runtime's warm-up weighs most"
    add(WORKER, "memory_growth_mb_per_1000_calls", "Memory growth per 1000 calls", _round(growth.mb_per_1000_calls),
        None, unit="MB", note=f"least-squares fit of RSS against calls ended ({fitted})"
        if growth.mb_per_1000_calls is not None else "not measured: too few readings with calls ended to fit")
    add(WORKER, "memory_growth_mb_per_hour", "Memory growth per hour", _round(growth.mb_per_hour), None, unit="MB",
        note=f"least-squares fit of RSS against time ({fitted})" if growth.mb_per_hour is not None
        else "not measured: fewer than three readings")
    cpu = _cpu_percent(runtime)
    add(WORKER, "cpu_usage_pct", "CPU: P95 per reading (% of one core)", p(cpu, 95) if cpu is not None else None,
        targets.cpu_usage_pct, unit="%", alert=70.0,
        note=f"{len(cpu)} intervals of ~5 s, max {p(cpu, 100)} %; scale out at 80 %" if cpu is not None and len(cpu)
        else "not measured: fewer than two readings of process_cpu_seconds_total")
    active, capacity = _column(runtime, "runtime_active_calls"), _column(runtime, "runtime_capacity")
    if active is not None and capacity is not None and (capacity > 0).any():
        share = (active / capacity.where(capacity > 0)).dropna() * 100
        add(WORKER, "active_calls_pct", "Active calls: peak share of capacity", round(float(share.max()), 1),
            targets.active_calls_pct, unit="%", alert=80.0,
            note=f"peak {active.max():g} active of {capacity.max():g} (readings every ~5 s)")
    else:
        add(WORKER, "active_calls_pct", "Active calls: peak share of capacity", None, targets.active_calls_pct,
            unit="%", alert=80.0, note="not measured: the runtime exports no runtime_active_calls / runtime_capacity")

    stt = _quantile_ms(samples, "runtime_stt_first_result_seconds")
    add(PROVIDER, "stt_latency_p95_ms", "STT latency P95", stt, targets.stt_latency_p95_ms, unit="ms", alert=300.0,
        note="audio sent to the provider's first transcript of it" + since if stt is not None
        else "not measured: no STT result observed")
    final = _quantile_ms(samples, "runtime_stt_final_latency_seconds")
    add(PROVIDER, "stt_final_latency_p95_ms", "STT final transcript P95", final, None, unit="ms",
        note="includes the endpointing silence that ends the caller's turn (a turn-taking setting, not the "
             "provider's speed)" if final is not None else "no final transcript observed")
    tts = _quantile_ms(samples, "runtime_tts_first_byte_seconds")
    add(PROVIDER, "tts_latency_p95_ms", "TTS latency P95", tts, targets.tts_latency_p95_ms, unit="ms", alert=300.0,
        note="text sent to the first audio byte" + since if tts is not None else "not measured: no TTS request")
    trips = total(samples, "runtime_breaker_trips_total")
    hours = (data.duration_s or 0.0) / 3600
    per_hour = round(trips / hours, 1) if trips is not None and hours > 0 else None
    add(PROVIDER, "breaker_trips_per_hour", "Circuit-breaker trips per hour", per_hour, targets.breaker_trips_per_hour,
        alert=10.0,
        note=f"{trips:g} trips in {hours * 60:.1f} min" + (" (a short run: one trip weighs a lot)" if hours < 0.5
                                                           else "") if per_hour is not None
        else "not measured: the runtime has no provider circuit breaker (or exports none)")

    ok = total(samples, "runtime_workflow_events_total", outcome="ok") or 0.0
    failed = total(samples, "runtime_workflow_events_total", outcome="failed") or 0.0
    delivered = _quantile_ms(samples, "runtime_workflow_delivery_seconds", outcome="ok")
    add(WORKFLOW_ISOLATION, "workflow_latency_p95_ms", "Workflow delivery latency P95", delivered, None, unit="ms",
        note="emission to delivery, retries included (fixed mode); never on the caller's time"
        if delivered is not None else "no delivery measured (none, or the turn awaited the workflow: see emission)")
    add(WORKFLOW_ISOLATION, "workflow_failure_rate", "Workflow failure rate",
        round(failed / (ok + failed), 4) if ok + failed else None, targets.workflow_failure_rate, alert=0.10,
        note=f"{failed:g} failed of {ok + failed:g} workflow events" if ok + failed
        else "not measured: no workflow event in this run")
    emit = _quantile_ms(samples, "runtime_workflow_emit_seconds")
    add(WORKFLOW_ISOLATION, "event_emission_p95_ms", "Workflow event emission P95", emit,
        targets.event_emission_p95_ms, unit="ms", alert=50.0,
        note="time the turn spent handing the event over" if emit is not None
        else "not measured: no workflow event emitted")
    return rows


def _RUNTIME_ROWS(t: Targets) -> list[tuple[str, str, str, float | None, str, float | None, bool]]:
    return [
        (WORKER, "memory_usage_pct", "Memory: peak RSS of the budget", t.memory_usage_pct, "%", 80.0, True),
        (WORKER, "memory_growth_mb_per_1000_calls", "Memory growth per 1000 calls", None, "MB", None, True),
        (WORKER, "memory_growth_mb_per_hour", "Memory growth per hour", None, "MB", None, True),
        (WORKER, "cpu_usage_pct", "CPU: P95 per reading (% of one core)", t.cpu_usage_pct, "%", 70.0, True),
        (WORKER, "active_calls_pct", "Active calls: peak share of capacity", t.active_calls_pct, "%", 80.0, True),
        (PROVIDER, "stt_latency_p95_ms", "STT latency P95", t.stt_latency_p95_ms, "ms", 300.0, True),
        (PROVIDER, "stt_final_latency_p95_ms", "STT final transcript P95", None, "ms", None, True),
        (PROVIDER, "tts_latency_p95_ms", "TTS latency P95", t.tts_latency_p95_ms, "ms", 300.0, True),
        (PROVIDER, "breaker_trips_per_hour", "Circuit-breaker trips per hour", t.breaker_trips_per_hour, "", 10.0,
         True),
        (WORKFLOW_ISOLATION, "workflow_latency_p95_ms", "Workflow delivery latency P95", None, "ms", None, True),
        (WORKFLOW_ISOLATION, "workflow_failure_rate", "Workflow failure rate", t.workflow_failure_rate, "", 0.10,
         True),
        (WORKFLOW_ISOLATION, "event_emission_p95_ms", "Workflow event emission P95", t.event_emission_p95_ms, "ms",
         50.0, True),
    ]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def harness_row(data: RunData, targets: Targets) -> TargetRow:
    lateness = data.lateness or {}
    return _row(HARNESS_GROUP, "harness_lateness_p99_ms", "Harness send lateness P99 (the harness's own)",
                lateness.get("p99_ms"), targets.harness_lateness_p99_ms, unit="ms",
                note=f"over {lateness.get('frames')} frames on the 20 ms grid; above target the run is invalid"
                + _gc_note(lateness.get("gc")) + _stall_note(lateness.get("stalls")) if lateness
                else "not measured: the run never wrote its summary")


def _stall_note(stalls: dict[str, Any] | None) -> str:
    if not stalls or not stalls.get("count"):
        return ""
    return (f"; its event loop stalled {stalls['count']} time(s) over {stalls['threshold_ms']} ms, longest "
            f"{stalls['longest_ms']:g} ms (what it was doing: harness_stall in events.jsonl)")


def _gc_note(gc: dict[str, Any] | None) -> str:
    if not gc:
        return ""
    return (f"; the harness's garbage collector paused it {sum(gc['collections'])} times during the load, longest "
            f"{max(gc['max_pause_ms']):g} ms")


def judge(data: RunData) -> tuple[list[TargetRow], str, str]:
    """Every target row, the overall verdict (pass, fail, invalid, not_measured) and its reason in words."""
    targets = targets_of(data)
    order = (CALLER, WORKER, AUDIO, PROVIDER, WORKFLOW_ISOLATION, HARNESS_GROUP)
    rows = sorted([*caller_rows(data, targets), *runtime_rows(data, targets), harness_row(data, targets)],
                  key=lambda r: order.index(r.group))
    harness = rows[-1]
    judged = rows[:-1]
    failed = [r.metric for r in judged if r.verdict == FAIL]
    unmeasured = [r.metric for r in judged if r.verdict == NOT_MEASURED]
    if harness.verdict == FAIL:
        return rows, "invalid", ("the harness itself was late on its 20 ms grid (p99 "
                                 f"{harness.measured} ms > {targets.harness_lateness_p99_ms:g} ms): it, not the agent, "
                                 "may have been the bottleneck; no verdict on the agent")
    connected = int(data.calls["connect_ms"].notna().sum()) if len(data.calls) else 0
    if "frames" not in (data.lateness or {}) and connected:  # no measurement at all, not "0 frames sent"
        # connected callers sent audio on the 20 ms grid: without its lateness nobody can vouch for the timings
        interrupted = (data.summary or {}).get("interrupted")
        return rows, "invalid", (f"the harness's own send lateness is unknown although {connected} call(s) "
                                 "connected and sent audio" + (f" ({interrupted})" if interrupted else "")
                                 + ": no verdict on the agent")
    if failed:
        return rows, FAIL, "targets missed: " + ", ".join(failed)
    if not len(data.calls):
        return rows, NOT_MEASURED, "no calls were placed"
    return rows, PASS, "every measured target held" + (f" (not measured: {', '.join(unmeasured)})"
                                                        if unmeasured else "")


def rows_by_metric(rows: list[TargetRow]) -> dict[str, TargetRow]:
    return {r.metric: r for r in rows}


def figures(rows: list[TargetRow]) -> dict[str, Any]:
    return {r.metric: r.measured for r in rows}


def fault_windows(data: RunData) -> list[dict[str, Any]]:
    """For each fault: the calls started while it was applied, how many were answered, and the worker
    availability inside the window (None when no call started in it)."""
    out = []
    calls = data.calls
    for fault in data.faults:
        end = fault.end_s if fault.end_s is not None else math.inf
        inside = calls[(calls["start_s"] >= fault.start_s) & (calls["start_s"] < end)] if len(calls) else calls
        answered = int(inside["answered"].sum()) if len(inside) else 0
        out.append({"label": fault.label, "target": fault.target, "start_s": fault.start_s, "end_s": fault.end_s,
                    "calls_started": len(inside), "answered": answered,
                    "availability": round(answered / len(inside), 4) if len(inside) else None})
    return out
