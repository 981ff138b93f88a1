"""Judge a run against its targets from the call records, and say plainly what could not be measured.

Works on the JSON form of the records (what ``events.jsonl`` holds), so the same numbers can be recomputed from a
run folder later. A metric with no data is ``not_measured``: it never passes by default.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from harness.scenario import Targets

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not_measured"


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 1) if values else None


def distribution(values: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": round(max(values), 1) if values else None,
    }


def _verdict(name: str, measured: float | None, target: float, *, at_most: bool, unit: str,
             note: str = "") -> dict[str, Any]:
    if measured is None:
        verdict = NOT_MEASURED
    elif at_most:
        verdict = PASS if measured <= target else FAIL
    else:
        verdict = PASS if measured >= target else FAIL
    return {"metric": name, "target": f"{'<=' if at_most else '>='} {target:g}{unit}", "measured": measured,
            "verdict": verdict, "note": note}


def answered(call: dict[str, Any]) -> bool:
    """The platform answered a new call: it neither refused nor failed the connection, and the caller heard the
    greeting (when the script waits for one). Worker availability is the share of calls answered."""
    if str(call.get("outcome")) in ("rejected", "failed_to_connect"):
        return False
    greetings = [t for t in call.get("turns", []) if t["kind"] == "greeting"]
    return not greetings or greetings[0]["first_audio_at"] is not None


def summarize(calls: list[dict[str, Any]], lateness: dict[str, Any], targets: Targets,
              recordings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``recordings``: the object-store count (``harness.session.count_recordings``), when the run had one."""
    outcomes = Counter(str(call.get("outcome")) for call in calls)
    turns = [turn for call in calls for turn in call.get("turns", [])]
    replies = [t for t in turns if t["kind"] == "reply"]
    reply_latency = [t["response_latency_ms"] for t in replies if t["response_latency_ms"] is not None]
    greeting_latency = [t["response_latency_ms"] for t in turns
                        if t["kind"] == "greeting" and t["response_latency_ms"] is not None]
    gaps = [gap for t in turns for gap in t["gaps_ms"]]
    max_gaps = [t["max_gap_ms"] for t in turns if t["first_audio_at"] is not None]
    heard = sum(len(t["heard"]) for t in turns)
    undecodable = sum(t["undecodable"] for t in turns)
    symbols = sum(t.get("audio_symbols") or 0 for t in turns)
    symbols_clear = sum(t.get("audio_symbols_clear") or 0 for t in turns)
    with_expect = [t for t in turns if t["expected"] and t["status"] != "interrupted"]
    expected_ok = sum(1 for t in with_expect if t["status"] == "ok")
    barge_ins = [t for t in turns if t.get("barge_in")]
    reactions = [t["barge_in_reaction_ms"] for t in barge_ins if t["barge_in_reaction_ms"] is not None]
    statuses = Counter(t["status"] for t in turns)

    total = len(calls)
    success_rate = round(outcomes.get("completed", 0) / total, 4) if total else None
    decode_rate = round(heard / (heard + undecodable), 4) if heard + undecodable else None
    expected_rate = round(expected_ok / len(with_expect), 4) if with_expect else None
    dead_air_turns = sum(1 for g in max_gaps if g > targets.dead_air_ms)
    broken_turns = sum(1 for g in max_gaps if g > targets.broken_silence_ms)
    lateness_p99 = lateness.get("p99_ms")
    answered_calls = sum(1 for call in calls if answered(call))
    availability = round(answered_calls / total, 4) if total else None
    lost = None
    if recordings is not None and recordings.get("listing_error") is None:
        lost = int(recordings["missing"])

    verdicts = [
        _verdict("call_success_rate", success_rate, targets.call_success_rate, at_most=False, unit="",
                 note=", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))),
        _verdict("worker_availability", availability, targets.worker_availability, at_most=False, unit="",
                 note=f"{answered_calls}/{total} new calls answered (not refused, greeting heard)"),
        _verdict("recordings_lost", lost, targets.recordings_lost, at_most=True, unit="",
                 note="no object store in this run" if recordings is None else
                 f"listing failed: {recordings['listing_error']}" if lost is None else
                 f"{recordings['arrived']}/{recordings['calls_with_media']} recordings in the bucket"),
        _verdict("response_latency_p95_ms", percentile(reply_latency, 95), targets.response_latency_p95_ms,
                 at_most=True, unit=" ms", note=f"{len(reply_latency)} replies"),
        _verdict("max_silence_gap_ms", round(max(max_gaps), 1) if max_gaps else None, targets.dead_air_ms,
                 at_most=True, unit=" ms",
                 note=f"{dead_air_turns} turns with dead air > {targets.dead_air_ms:g} ms, {broken_turns} > "
                      f"{targets.broken_silence_ms:g} ms"),
        _verdict("phrase_decode_rate", decode_rate, targets.phrase_decode_rate, at_most=False, unit="",
                 note=f"{heard} phrases decoded, {undecodable} undecodable (garbled)"),
        _verdict("audio_quality", round(symbols_clear / symbols, 4) if symbols else None, targets.audio_quality,
                 at_most=False, unit="", note=f"{symbols_clear}/{symbols} phrase symbols arrived intact"),
        _verdict("expected_phrase_rate", expected_rate, targets.expected_phrase_rate, at_most=False, unit="",
                 note=f"{expected_ok}/{len(with_expect)} turns said what was expected"),
        _verdict("barge_in_reaction_p95_ms", percentile(reactions, 95), targets.barge_in_reaction_p95_ms,
                 at_most=True, unit=" ms",
                 note=f"{len(reactions)}/{len(barge_ins)} barge-ins got a clear" if barge_ins else "no barge-in"),
        _verdict("harness_lateness_p99_ms", lateness_p99, targets.harness_lateness_p99_ms, at_most=True,
                 unit=" ms", note="the harness's own send lateness on the 20 ms grid"),
    ]
    # not measured because no frame was sent (e.g. nobody answered) is no excuse; not measured although callers
    # connected and sent audio (a load process that died before it sent its figures) leaves the timings unvouched
    connected = sum(1 for call in calls if call.get("connect_ms") is not None)
    unvouched = "frames" not in lateness and connected > 0  # no measurement at all, not "0 frames sent"
    harness_ok = verdicts[-1]["verdict"] != FAIL and not unvouched
    judged = verdicts[:-1]
    if not harness_ok:
        overall = "invalid"
    elif any(v["verdict"] == FAIL for v in judged):
        overall = FAIL
    elif total == 0:
        overall = NOT_MEASURED
    else:
        overall = PASS
    return {
        "verdict": overall,
        "verdict_reason": {
            "invalid": (f"the harness's own send lateness is unknown although {connected} call(s) connected and "
                        "sent audio: no verdict on the agent") if unvouched else
                       ("the harness itself was late on its 20 ms grid (p99 above target): it, not the agent, may "
                        "have been the bottleneck; no verdict on the agent"),
            FAIL: "targets missed: " + ", ".join(v["metric"] for v in judged if v["verdict"] == FAIL),
            PASS: "every measured target held" + (
                " (not measured: " + ", ".join(v["metric"] for v in judged if v["verdict"] == NOT_MEASURED) + ")"
                if any(v["verdict"] == NOT_MEASURED for v in judged) else ""),
            NOT_MEASURED: "no calls were placed",
        }[overall],
        "calls": {"total": total, "outcomes": dict(outcomes), "success_rate": success_rate,
                  "answered": answered_calls, "worker_availability": availability},
        "turns": {"total": len(turns), "status": dict(statuses)},
        "response_latency_ms": distribution(reply_latency),
        "greeting_latency_ms": distribution(greeting_latency),
        "silence_gaps_ms": {**distribution(gaps), "dead_air_turns": dead_air_turns, "broken_turns": broken_turns},
        "phrases": {"decoded": heard, "undecodable": undecodable, "decode_rate": decode_rate,
                    "expected_turns": len(with_expect), "expected_ok": expected_ok},
        "barge_in": {"turns": len(barge_ins), "reaction_ms": distribution(reactions)},
        "harness_lateness": lateness,
        "targets": verdicts,
    }
