"""A made-up run folder, written exactly as ``voicechaos run`` writes a real one: for the report's scale benchmark and
its browser test.

Why: the report must hold its budget on a soak of a million turns, and its page must render real-looking data, but
a real soak of that size takes hours of calls. So this writes the same files (``events.jsonl``,
``runtime_metrics.jsonl``, ``summary.json``, ``scenario.yaml``) with the same shapes, from random but plausible
values: response latency lognormal around 600 ms with a few % slow turns, silence gaps with some dead air, ~1 %
dropped calls, a few garbled and mismatched turns, and one fault window (the STT slows down) in which latency rises
and the runtime, full, refuses new calls.

Where each shape comes from (so that the file is what the report will meet in the field):

- events: ``harness/eventlog.py`` (``{"event", "time", **fields}``, one compact JSON line each, in time order),
  the fields of ``harness/caller.py``'s emits, ``CallRecord.to_json``/``TurnRecord.to_json`` key for key (checked
  against the dataclasses after writing: a change in the harness fails loudly here, not silently in the report);
- ``run_started.config``: the scenario's ``model_dump(mode="json")`` of a validated :class:`Scenario`;
- ``runtime_metrics.jsonl``: the keys of a real exposition of ``reference_runtime.metrics.RuntimeMetrics`` read by
  ``harness.runtime_metrics.parse_samples`` (bucket bounds included), sampled every 5 s;
- ``summary.json``: the harness's own parts of what ``harness/run.py`` writes (lateness, recordings, the fault
  window, ``runtime_figures`` on the readings); the figures and verdicts are left to the report, which recomputes
  them from the lines.

Speed: values are drawn with numpy for all calls at once; lines are built with f-strings from pre-encoded pieces
and written in large chunks, so a million turns take well under a minute.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import yaml

from harness.audio.phrase_codec import normalize_text
from harness.chaos.faults import Fault
from harness.records import CallRecord, TurnRecord
from harness.runtime_metrics import parse_samples, runtime_figures
from harness.scenario import Scenario, scenario_from_mapping
from reference_runtime.metrics import RuntimeMetrics

# The harness's clocks at the load's start: the monotonic clock (seconds since boot) turns are timed on, and the wall
# clock calls are stamped with. Fixed, so that a seed gives the same folder byte for byte.
LOAD_MONO = 18_250.402113571
LOAD_WALL = 1_795_642_053.851707
RUNTIME_URL = "http://127.0.0.1:41700"
WEBHOOK_URL = f"{RUNTIME_URL}/twilio/voice"
MEDIA_URL = "ws://127.0.0.1:41700/media"
SCENARIO_LIMIT = 100_000  # harness.scenario.Callers.count's bound

# Outcome codes of the arrays, and their names in the records
COMPLETED, REJECTED, DROPPED, TIMED_OUT, FAILED_TO_CONNECT = range(5)
OUTCOMES = ("completed", "rejected", "dropped", "timed_out", "failed_to_connect")
# Turn status codes, and their names
OK, GARBLED, MISMATCH, CUT_OFF, NO_RESPONSE = range(5)
STATUSES = ("ok", "garbled", "mismatch", "cut_off", "no_response")
_CHUNK_CALLS = 10_000  # calls formatted per batch: bounds the Python objects alive at once
_FLUSH_BYTES = 16 << 20


@dataclass(frozen=True)
class Mix:
    """How often each thing goes wrong (shares of calls or of turns)."""

    rejected: float = 0.001  # calls refused outside the fault
    rejected_in_fault: float = 0.25  # calls refused while the fault holds (workers pile up on the slow STT)
    failed_to_connect: float = 0.0005
    dropped: float = 0.01  # the platform ends the stream mid-script
    timed_out: float = 0.003  # a turn gets no reply at all
    slow_turn: float = 0.03  # replies 1.8-3.5 times slower
    gap: float = 0.06  # turns with a silence gap inside the agent's speech
    second_gap: float = 0.01
    dead_air: float = 0.004  # turns whose gap is dead air (1.6-4.2 s)
    garbled: float = 0.003
    mismatch: float = 0.001


MIX = Mix()


@dataclass(frozen=True)
class Step:
    """One agent turn of the script: the caller's line (None for the greeting), what the scenario expects, and the
    sentences the agent's audio decodes to."""

    text: str | None
    expect: tuple[str, ...]
    heard: tuple[str, ...]


GREETING = Step(None, ("Hello, thanks for calling Acme Dental. How can I help you today?",),
                ("Hello, thanks for calling Acme Dental.", "How can I help you today?"))
MIDDLE = (
    Step("Hi, I would like to book a teeth cleaning.", ("Sure, I can book a cleaning.", "Which day works for you?"),
         ("Sure, I can book a cleaning.", "Which day works for you?")),
    Step("Tuesday morning would be great.", ("Tuesday at ten is free. Shall I book it?",),
         ("Tuesday at ten is free.", "Shall I book it?")),
    Step("Is ten the earliest slot?", ("Ten is the earliest slot on Tuesday.",),
         ("Ten is the earliest slot on Tuesday.",)),
    Step("Could you say that again?", ("Tuesday at ten is free. Shall I book it?",),
         ("Tuesday at ten is free.", "Shall I book it?")),
)
BOOKING = Step("Yes, please.", ("You are booked for Tuesday at ten.", "Thanks for calling Acme Dental. Goodbye!"),
               ("You are booked for Tuesday at ten.", "Thanks for calling Acme Dental. Goodbye!"))
MISHEARD = ("Sorry, could you say that again?",)  # what a mismatched turn hears (the LLM's default reply)


def script_steps(turns_per_call: int) -> list[Step]:
    if turns_per_call < 2:
        return [GREETING]
    return [GREETING, *(MIDDLE[i % len(MIDDLE)] for i in range(turns_per_call - 2)), BOOKING]


def _js(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _num(value: float) -> str:
    """A float as ``json.dumps`` writes it; NaN (not measured) as null."""
    return "null" if value != value else repr(value)


# --- the scenario ---------------------------------------------------------------------------------------------------


def build_scenario(*, calls: int, steps: list[Step], duration_s: float, arrival_rate: float, capacity: int,
                   seed: int) -> tuple[Scenario, dict[str, Any]]:
    """The scenario such a run would have been started with, validated like a real one, and its dump as
    ``run_started`` logs it. A count above the scenario's bound (a soak of several runs' worth of calls) is written
    as is: the harness would have needed several runs, the report gets one."""
    script: list[dict[str, Any]] = [{"kind": "wait_for_greeting", "expect": list(GREETING.expect)}]
    script += [{"kind": "say", "text": step.text, "expect": list(step.expect)} for step in steps[1:]]
    script.append({"kind": "expect_hangup", "timeout": 10.0} if len(steps) > 1 else {"kind": "hang_up"})
    fault_at = round(duration_s * 0.4, 1)
    mapping = {
        "name": "soak-synthetic",
        "description": "A generated soak: steady calls through the dental agent, the STT slowed down for a while.",
        "target": {"embedded": {"agent": "agents/dental.yaml", "capacity": capacity}},
        "callers": {"count": min(calls, SCENARIO_LIMIT), "arrival_rate": min(1000.0, round(arrival_rate, 4))},
        "script": script,
        "limits": {"duration": round(duration_s * 1.2 + 300, 1), "call_timeout": 120.0},
        "faults": [{"name": "STT slows down", "target": "stt", "at": fault_at,
                    "duration": round(duration_s * 0.1, 1),
                    "toxic": {"type": "latency", "stream": "downstream", "attributes": {"latency": 1500,
                                                                                       "jitter": 200}}}],
        "seed": seed,
    }
    scenario = scenario_from_mapping(mapping, "synthetic")
    config = scenario.model_dump(mode="json")
    config["callers"]["count"] = calls
    return scenario, config


# --- the calls ------------------------------------------------------------------------------------------------------


@dataclass
class Calls:
    """Every call and turn of the run as arrays: calls along axis 0, turns along axis 1. Times are seconds after
    the load started; NaN is "not measured" (null in the records)."""

    start: np.ndarray  # the call was placed
    connect_ms: np.ndarray
    outcome: np.ndarray
    nturns: np.ndarray  # turns recorded (0 for a call that never connected)
    end: np.ndarray
    duration: np.ndarray
    sids: list[str]
    stream_sids: list[str]
    lateness_max_ms: np.ndarray
    speech_start: np.ndarray
    listen: np.ndarray
    first: np.ndarray
    last_end: np.ndarray
    close: np.ndarray
    latency: np.ndarray
    gap1: np.ndarray
    gap2: np.ndarray
    status: np.ndarray

    @property
    def connected(self) -> np.ndarray:
        return (self.outcome != REJECTED) & (self.outcome != FAILED_TO_CONNECT)

    def turn_mask(self) -> np.ndarray:
        return np.arange(self.listen.shape[1])[None, :] < self.nturns[:, None]

    def max_gap(self) -> np.ndarray:
        return np.fmax(np.nan_to_num(self.gap1, nan=0.0), np.nan_to_num(self.gap2, nan=0.0))


def _lognormal(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return rng.lognormal(math.log(median), sigma, size)


def _audio_s(sentences: tuple[str, ...]) -> float:
    """How long the agent speaks these sentences (the phrase codec's pace, about 75 ms a character)."""
    return sum(0.075 * len(s) + 0.1 for s in sentences)


def draw_calls(rng: np.random.Generator, *, calls: int, steps: list[Step], spacing: float,
               fault: tuple[float, float], mix: Mix = MIX) -> Calls:
    n, turns = calls, len(steps)
    fault_start, fault_end = fault
    start = np.arange(n) * spacing + rng.uniform(0.0002, 0.004, n)  # the launcher's own lateness
    in_fault = (start >= fault_start) & (start < fault_end)
    outcome = np.full(n, COMPLETED, dtype=np.int8)
    outcome[rng.random(n) < np.where(in_fault, mix.rejected_in_fault, mix.rejected)] = REJECTED
    rest = outcome == COMPLETED
    outcome[rest & (rng.random(n) < mix.failed_to_connect)] = FAILED_TO_CONNECT
    rest = outcome == COMPLETED
    outcome[rest & (rng.random(n) < mix.dropped) & (turns > 1)] = DROPPED
    rest = outcome == COMPLETED
    outcome[rest & (rng.random(n) < mix.timed_out)] = TIMED_OUT
    connected = (outcome != REJECTED) & (outcome != FAILED_TO_CONNECT)
    last_turn = np.full(n, turns - 1)
    if turns > 1:
        dropped = outcome == DROPPED
        last_turn[dropped] = rng.integers(1, turns, int(dropped.sum()))
    timed = outcome == TIMED_OUT
    last_turn[timed] = rng.integers(0, turns, int(timed.sum()))
    nturns = np.where(connected, last_turn + 1, 0)
    connect_ms = np.where(connected, np.round(_lognormal(rng, 6.0, 0.35, n), 1), np.nan)

    shape = (n, turns)
    cols = {name: np.full(shape, np.nan) for name in ("speech_start", "listen", "first", "last_end", "close",
                                                      "latency", "gap1", "gap2")}
    status = np.zeros(shape, dtype=np.int8)
    # the "start" message is sent right after the websocket opens: the greeting is timed from it
    previous = start + np.nan_to_num(connect_ms) / 1000 + rng.uniform(0.0004, 0.0012, n)
    hangup_expected = turns > 1
    for j, step in enumerate(steps):
        if j == 0:
            listen = previous
            latency = _lognormal(rng, 140.0, 0.15, n)
            reply_timeout = 10.0
        else:
            speech_start = previous + 0.3 + rng.uniform(0.0, 0.02, n)  # think time, then the next 20 ms frame
            cols["speech_start"][:, j] = np.round(speech_start + LOAD_MONO, 9) - LOAD_MONO
            listen = speech_start + 0.065 * len(step.text or "") + 0.4 + rng.uniform(0.0, 0.02, n)
            latency = _lognormal(rng, 600.0, 0.25, n)
            slow = rng.random(n) < mix.slow_turn
            latency[slow] *= rng.uniform(1.8, 3.5, int(slow.sum()))
            # the STT slowed down: every reply waits for it
            during = (listen >= fault_start) & (listen < fault_end)
            latency[during] += rng.uniform(700.0, 1800.0, int(during.sum()))
            reply_timeout = 8.0
        latency = np.round(latency, 1)
        gap1 = np.where(rng.random(n) < mix.gap, np.clip(_lognormal(rng, 350.0, 0.5, n), 40.0, 1400.0), np.nan)
        dead = rng.random(n) < mix.dead_air
        gap1[dead] = rng.uniform(1600.0, 4200.0, int(dead.sum()))
        gap2 = np.where(~np.isnan(gap1) & (rng.random(n) < mix.second_gap), _lognormal(rng, 250.0, 0.4, n), np.nan)
        gap1, gap2 = np.round(gap1, 1), np.round(gap2, 1)
        st = np.full(n, OK, dtype=np.int8)
        st[rng.random(n) < mix.garbled] = GARBLED
        st[(st == OK) & (rng.random(n) < mix.mismatch)] = MISMATCH
        first = listen + latency / 1000
        audio = _audio_s(step.heard) * np.where(st == MISMATCH, 0.8, 1.0)
        last_end = first + audio + (np.nan_to_num(gap1) + np.nan_to_num(gap2)) / 1000
        close = last_end + 0.4 + rng.uniform(0.0, 0.02, n)  # limits.settle of silence after the expected phrases
        final = (j == turns - 1) & (outcome == COMPLETED) & hangup_expected
        close[final] = last_end[final] + rng.uniform(0.02, 0.08, int(final.sum()))  # the agent hangs up at once
        cut = (outcome == DROPPED) & (last_turn == j)
        k = int(cut.sum())
        last_end[cut] = first[cut] + _audio_s(step.heard) * rng.uniform(0.15, 0.6, k)
        close[cut] = last_end[cut] + rng.uniform(0.005, 0.05, k)
        gap1[cut] = gap2[cut] = np.nan
        st[cut] = CUT_OFF
        silent = (outcome == TIMED_OUT) & (last_turn == j)
        k = int(silent.sum())
        first[silent] = last_end[silent] = latency[silent] = gap1[silent] = gap2[silent] = np.nan
        close[silent] = listen[silent] + reply_timeout + rng.uniform(0.0, 0.02, k)
        st[silent] = NO_RESPONSE
        # times as the monotonic clock gives them (9 decimals), kept relative to the load's start
        for name, values in (("listen", listen), ("first", first), ("last_end", last_end)):
            cols[name][:, j] = np.round(values + LOAD_MONO, 9) - LOAD_MONO
        cols["close"][:, j] = close
        cols["latency"][:, j] = latency
        cols["gap1"][:, j], cols["gap2"][:, j] = gap1, gap2
        status[:, j] = st
        previous = close

    end = np.where(connected, cols["close"][np.arange(n), np.maximum(nturns - 1, 0)] + 0.0003, np.nan)
    refused_for = np.where(outcome == REJECTED, rng.uniform(0.006, 0.03, n), 10.0 + rng.uniform(0.001, 0.01, n))
    end = np.where(connected, end, start + refused_for)
    duration = np.round(end - start, 3)
    raw = rng.bytes(32 * n).hex()  # CA/MZ + 32 hex digits each, as harness.twilio.media_streams draws them
    sids = [f"CA{raw[64 * i:64 * i + 32]}" for i in range(n)]
    stream_sids = [f"MZ{raw[64 * i + 32:64 * i + 64]}" for i in range(n)]
    lateness = np.where(connected, np.round(_lognormal(rng, 3.5, 0.5, n), 3), 0.0)
    return Calls(start=start, connect_ms=connect_ms, outcome=outcome, nturns=nturns, end=end, duration=duration,
                 sids=sids, stream_sids=stream_sids, lateness_max_ms=lateness, status=status, **cols)


# --- events.jsonl ---------------------------------------------------------------------------------------------------


class _Writer:
    """Lines in time order (a heap of what is due later), written in large chunks."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", encoding="utf-8")
        self._heap: list[tuple[float, int, str]] = []
        self._buffer: list[str] = []
        self._size = 0
        self._seq = 0
        self.lines = 0

    def later(self, at: float, line: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, line))

    def now(self, at: float, line: str) -> None:
        """Write ``line`` after everything due before ``at``."""
        heap = self._heap
        while heap and heap[0][0] <= at:
            self._put(heapq.heappop(heap)[2])
        self._put(line)

    def drain(self) -> None:
        while self._heap:
            self._put(heapq.heappop(self._heap)[2])

    def _put(self, line: str) -> None:
        self._buffer.append(line)
        self._size += len(line)
        self.lines += 1
        if self._size >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._file.write("\n".join(self._buffer) + "\n")
        self._buffer, self._size = [], 0

    def close(self) -> None:
        self.drain()
        if self._buffer:
            self._flush()
        self._file.close()


def _event(name: str, at_wall: float, fields: dict[str, Any]) -> str:
    return json.dumps({"event": name, "time": round(at_wall, 6), **fields}, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class _StepText:
    """A step's pre-encoded JSON pieces, per turn status."""

    kind: str
    caller_text: str
    expected: str
    heard: tuple[str, ...]  # indexed by status
    heard_count: tuple[int, ...]


def _step_texts(steps: list[Step]) -> list[_StepText]:
    out = []
    for step in steps:
        full = list(step.heard)
        by_status = {OK: full, GARBLED: full[:-1], MISMATCH: list(MISHEARD), CUT_OFF: full[:1] if len(full) > 1
                     else [], NO_RESPONSE: []}
        heard = tuple(_js(by_status[s]) for s in range(len(STATUSES)))
        out.append(_StepText(kind="greeting" if step.text is None else "reply", caller_text=_js(step.text),
                             expected=_js([normalize_text(e) for e in step.expect]), heard=heard,
                             heard_count=tuple(len(by_status[s]) for s in range(len(STATUSES)))))
    return out


def write_calls(writer: _Writer, calls: Calls, steps: list[Step]) -> None:
    texts = _step_texts(steps)
    reasons = {
        COMPLETED: _js("the agent hung up" if len(steps) > 1 else "the caller hung up at the end of the script"),
        REJECTED: _js("<Reject reason='busy'>"),
        FAILED_TO_CONNECT: _js(f"voice webhook {WEBHOOK_URL}: no answer within 10 s"),
    }
    closes = {COMPLETED: ("1000", '"call completed"') if len(steps) > 1 else ("null", '""'),
              DROPPED: ("1011", '"internal error"'), TIMED_OUT: ("null", '""'), REJECTED: ("null", '""'),
              FAILED_TO_CONNECT: ("null", '""')}
    garbled_reasons = _js(["checksum mismatch"])
    url = _js(MEDIA_URL)
    n = len(calls.start)
    for lo in range(0, n, _CHUNK_CALLS):
        hi = min(n, lo + _CHUNK_CALLS)
        part = slice(lo, hi)
        start = (calls.start[part] + LOAD_WALL).tolist()
        started_at = np.round(calls.start[part] + LOAD_WALL, 7).tolist()
        connect = calls.connect_ms[part].tolist()
        end = (calls.end[part] + LOAD_WALL).tolist()
        duration = calls.duration[part].tolist()
        outcome = calls.outcome[part].tolist()
        nturns = calls.nturns[part].tolist()
        lateness = calls.lateness_max_ms[part].tolist()
        listen = np.round(calls.listen[part] + LOAD_MONO, 9).tolist()
        speech = np.round(calls.speech_start[part] + LOAD_MONO, 9).tolist()
        first = np.round(calls.first[part] + LOAD_MONO, 9).tolist()
        last_end = np.round(calls.last_end[part] + LOAD_MONO, 9).tolist()
        close = (calls.close[part] + LOAD_WALL).tolist()
        closed_at = np.round(calls.close[part] + LOAD_MONO, 9).tolist()  # the same moment on the monotonic clock
        latency = calls.latency[part].tolist()
        gap1 = calls.gap1[part].tolist()
        gap2 = calls.gap2[part].tolist()
        status = calls.status[part].tolist()
        for k in range(hi - lo):
            call_id = lo + k
            t0 = start[k]
            writer.now(t0, f'{{"event":"call_started","time":{round(t0, 6)!r},"call_id":{call_id},'
                           f'"call_sid":"{calls.sids[call_id]}"}}')
            oc = outcome[k]
            bodies = []
            heard_total = 0
            if nturns[k]:
                writer.later(t0 + connect[k] / 1000 + 0.0002,
                             f'{{"event":"call_connected","time":{round(t0 + connect[k] / 1000 + 0.0002, 6)!r},'
                             f'"call_id":{call_id},"url":{url},"connect_ms":{connect[k]!r}}}')
                for j in range(nturns[k]):
                    text = texts[j]
                    st = status[k][j]
                    g1, g2 = gap1[k][j], gap2[k][j]
                    if g1 != g1:
                        gaps, max_gap = "", 0.0
                    elif g2 != g2:
                        gaps, max_gap = repr(g1), g1
                    else:
                        gaps, max_gap = f"{g1!r},{g2!r}", max(g1, g2)
                    heard_total += text.heard_count[st]
                    # 40 symbols a phrase; a garbled one arrived three quarters intact
                    garbled = int(st == GARBLED)
                    symbols = 40 * (text.heard_count[st] + garbled)
                    clear = 40 * text.heard_count[st] + 30 * garbled
                    quality = repr(round(clear / symbols, 4)) if symbols else "null"
                    body = (f'{{"index":{j},"step":{j},"kind":"{text.kind}","caller_text":{text.caller_text},'
                            f'"expected":{text.expected},"listen_from":{listen[k][j]!r},'
                            f'"caller_speech_start":{_num(speech[k][j])},"first_audio_at":{_num(first[k][j])},'
                            f'"last_audio_end":{_num(last_end[k][j])},"response_latency_ms":{_num(latency[k][j])},'
                            f'"closed_at":{closed_at[k][j]!r},"gaps_ms":[{gaps}],"heard":{text.heard[st]},'
                            f'"undecodable":{int(st == GARBLED)},'
                            f'"undecodable_reasons":{garbled_reasons if st == GARBLED else "[]"},"cut_phrases":0,'
                            f'"audio_symbols":{symbols},"audio_symbols_clear":{clear},"concealed_ms":0.0,'
                            f'"barge_in":false,"barge_in_reaction_ms":null,"stray_clears":0,'
                            f'"status":"{STATUSES[st]}","max_gap_ms":{max_gap!r},"audio_quality":{quality}}}')
                    bodies.append(body)
                    at = close[k][j]
                    writer.later(at, f'{{"event":"turn","time":{round(at, 6)!r},"call_id":{call_id},{body[1:]}')
            if oc == DROPPED:
                reason = _js(f"the platform ended the stream during script step {nturns[k] - 1}: close code 1011 "
                             "(internal error)")
            elif oc == TIMED_OUT:
                last = nturns[k] - 1
                reason = _js(f"no agent audio within {10 if last == 0 else 8} s (turn {last}, script step {last})")
            else:
                reason = reasons[oc]
            code, why = closes[oc]
            frames = int(duration[k] * 50) if nturns[k] else 0
            writer.later(end[k], (
                f'{{"event":"call_ended","time":{round(end[k], 6)!r},"call_id":{call_id},'
                f'"call_sid":"{calls.sids[call_id]}","stream_sid":"{calls.stream_sids[call_id]}",'
                f'"outcome":"{OUTCOMES[oc]}","reason":{reason},"started_at":{started_at[k]!r},'
                f'"connect_ms":{_num(connect[k])},"duration_s":{duration[k]!r},"turns":[{",".join(bodies)}],'
                f'"frames_sent":{frames},"dtmf_sent":"","marks_echoed":{heard_total},"clears":0,"stray_clears":0,'
                f'"protocol_errors":0,"protocol_error_examples":[],"unexpected_messages":0,"close_code":{code},'
                f'"close_reason":{why},"send_lateness_max_ms":{lateness[k]!r},"discarded_audio_bytes":0,'
                f'"transport":"twilio","group":"twilio","concealed_ms":0.0,"late_frames":0,"playout_underruns":0,'
                f'"playout_delay_ms":null,'
                f'"rtp_packets_received":null,"rtp_packets_lost":null,"rtp_jitter_ms":null}}'))


def check_shapes(events_path: Path) -> None:
    """The first call record and turn written have exactly the keys, in order, of the harness's own records."""
    want_call = list(CallRecord(call_id=0, call_sid="", stream_sid="").to_json())
    want_turn = list(TurnRecord(index=0, step=0, kind="greeting").to_json())
    found_call = found_turn = None
    with events_path.open("rb") as handle:
        for line in handle:
            event = orjson.loads(line)
            if event["event"] == "call_ended" and event["turns"] and found_call is None:
                found_call = event
            elif event["event"] == "turn" and found_turn is None:
                found_turn = event
            if found_call is not None and found_turn is not None:
                break
    if found_call is None or found_turn is None:
        return  # no call connected: nothing to compare
    problems = []
    if list(found_call)[2:] != want_call:
        problems.append(f"call_ended keys {list(found_call)[2:]} != CallRecord.to_json {want_call}")
    if list(found_call["turns"][0]) != want_turn:
        problems.append(f"turn keys {list(found_call['turns'][0])} != TurnRecord.to_json {want_turn}")
    if list(found_turn)[3:] != want_turn:
        problems.append(f"turn event keys {list(found_turn)[3:]} != call_id + TurnRecord.to_json")
    if problems:
        raise RuntimeError("the harness's records changed; update bench/synthetic_run.py: " + "; ".join(problems))


# --- runtime_metrics.jsonl ------------------------------------------------------------------------------------------

#: the providers of the reference runtime's chains (fixed mode), by role: primary first
CHAINS = {"stt": ("deepgram", "assemblyai"), "llm": ("openai", "anthropic"), "tts": ("elevenlabs", "deepgram-aura")}
RUNTIME_OUTCOMES = {COMPLETED: "completed", DROPPED: "error", TIMED_OUT: "caller_hangup", REJECTED: "rejected_busy"}


def metric_template() -> list[str]:
    """The sample keys of a real ``/metrics`` reading of the reference runtime, with the label values this run
    uses: its registry is exercised the way a run would, then read through the harness's own parser."""
    metrics = RuntimeMetrics(active_calls=lambda: 0.0, capacity=lambda: 0.0, ready=lambda: 1.0)
    for role, providers in CHAINS.items():
        for provider in providers:
            metrics.breaker_registered(role, provider, lambda: "closed")  # type: ignore[arg-type]
    for role, provider in (("stt", "deepgram"), ("stt", "assemblyai"), ("llm", "openai"), ("tts", "elevenlabs")):
        metrics.observe_latency(role, provider, 0.1)  # type: ignore[arg-type]
    metrics.observe_first_result("stt", "deepgram", 0.1)
    for outcome in RUNTIME_OUTCOMES.values():
        metrics.calls.labels(outcome=outcome)
    metrics.count_error("stt", "deepgram", "timeout")
    metrics.fallback_used("stt", "deepgram", "assemblyai")
    metrics.workflow_delivered(0.1)
    metrics.workflow_latency.observe(0.001)
    metrics.upload_succeeded(0.1, 1)
    metrics.spooled(1)
    metrics.recordings.labels(outcome="stored")
    metrics.recording_latency.observe(0.001)
    return list(parse_samples(metrics.exposition().decode()))


def _split(key: str) -> tuple[str, dict[str, str]]:
    if "{" not in key:
        return key, {}
    name, inner = key[:-1].split("{", 1)
    labels = {}
    for part in inner.split('",'):
        label, _, value = part.partition('="')
        labels[label] = value.rstrip('"')
    return name, labels


def _cumulative(at: np.ndarray, readings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """How many of the events at times ``at`` (or their summed weights) happened by each reading."""
    order = np.argsort(at)
    done = np.searchsorted(at[order], readings, side="right")
    if weights is None:
        return done.astype(float)
    sums = np.concatenate([[0.0], np.cumsum(weights[order])])
    return sums[done]


def runtime_readings(calls: Calls, rng: np.random.Generator, *, readings: np.ndarray, fault: tuple[float, float],
                     capacity: int) -> tuple[list[str], np.ndarray]:
    """Every series of the template over the readings: ``(keys, values[reading, key])``."""
    keys = metric_template()
    k = len(readings)
    fault_start, fault_end = fault
    connected = calls.connected
    mask = calls.turn_mask()
    replies = mask.copy()
    replies[:, 0] = False
    answered = replies & ~np.isnan(calls.latency)
    t_reply = calls.listen[answered]
    n_reply = len(t_reply)
    in_fault = (t_reply >= fault_start) & (t_reply < fault_end)
    rerouted = in_fault & (rng.random(n_reply) < 0.7)  # once the breaker opened, the fallback STT took the turns

    observations: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[np.ndarray, np.ndarray]] = {}

    def observe(name: str, labels: dict[str, str], at: np.ndarray, values: np.ndarray) -> None:
        observations[(name, tuple(sorted(labels.items())))] = (at, values)

    stt = _lognormal(rng, 0.07, 0.3, n_reply)
    stt[in_fault & ~rerouted] += rng.uniform(1.3, 1.9, int((in_fault & ~rerouted).sum()))
    observe("runtime_stt_final_latency_seconds", {"provider": "deepgram"}, t_reply[~rerouted], stt[~rerouted])
    observe("runtime_stt_final_latency_seconds", {"provider": "assemblyai"}, t_reply[rerouted],
            _lognormal(rng, 0.11, 0.3, int(rerouted.sum())))
    observe("runtime_stt_first_result_seconds", {"provider": "deepgram"}, t_reply[~rerouted], stt[~rerouted] * 0.6)
    observe("runtime_llm_first_token_seconds", {"provider": "openai"}, t_reply, _lognormal(rng, 0.35, 0.3, n_reply))
    observe("runtime_tts_first_byte_seconds", {"provider": "elevenlabs"}, t_reply,
            _lognormal(rng, 0.08, 0.3, n_reply))
    observe("runtime_workflow_emit_seconds", {}, t_reply, _lognormal(rng, 0.0004, 0.4, n_reply))
    ended = calls.end[connected]
    observe("runtime_workflow_delivery_seconds", {"outcome": "ok"}, ended, _lognormal(rng, 0.08, 0.4, len(ended)))
    observe("runtime_recording_store_seconds", {}, ended, _lognormal(rng, 0.002, 0.5, len(ended)))
    uploaded_at = ended + _lognormal(rng, 0.15, 0.4, len(ended))
    observe("runtime_recording_upload_seconds", {"outcome": "uploaded"}, uploaded_at, uploaded_at - ended)

    connect_at = calls.start[connected] + calls.connect_ms[connected] / 1000
    active = _cumulative(connect_at, readings) - _cumulative(ended, readings)
    ended_calls = _cumulative(ended, readings)
    rss = (165e6 + 1024.0 * ended_calls + 260e3 * active + rng.normal(0, 1.5e6, k)).round()
    budget = float(max(2 << 30, 2 * rss.max()))
    cpu_percent = np.clip(6.0 + 0.045 * active + rng.normal(0, 1.5, k), 0.5, 190.0).round(1)
    interval = np.diff(readings, prepend=0.0)
    # the primary STT's breaker: opens a few seconds into the fault, half-open every 30 s, closed once it is over
    breaker = np.zeros(k)
    since = readings - fault_start - 3.0
    opened = (since >= 0) & (readings < fault_end + 2.0)
    breaker[opened] = np.where((since[opened] % 30.0) < 5.0, 1.0, 2.0)
    breaker[opened & (since < 5.0)] = 2.0
    trips = np.cumsum((breaker == 2.0) & (np.concatenate([[0.0], breaker[:-1]]) != 2.0)).astype(float)
    rec_bytes = 16_000.0 * calls.duration[connected]  # 8 kHz μ-law, both legs of the call
    simple: dict[str, np.ndarray] = {
        "runtime_active_calls": active,
        "runtime_capacity": np.full(k, float(capacity)),
        "runtime_ready": (active < capacity).astype(float),
        "runtime_process_resident_memory_bytes": rss,
        "process_resident_memory_bytes": rss + 2.1e6,
        "process_virtual_memory_bytes": (rss * 3.1 + 1.2e9).round(),
        "process_start_time_seconds": np.full(k, round(LOAD_WALL - 1.4, 2)),
        "process_cpu_seconds_total": np.cumsum(cpu_percent / 100 * interval).round(2),
        "process_open_fds": 40.0 + 2 * active,
        "process_max_fds": np.full(k, 1_048_576.0),
        "runtime_turns_total": _cumulative(t_reply, readings),
        "runtime_memory_budget_bytes": np.full(k, budget),
        "runtime_memory_budget_fraction": (rss / budget).round(6),
        "runtime_process_cpu_percent": cpu_percent,
        "runtime_workflow_queue_depth": np.where(active > 0, rng.integers(0, 3, k), 0).astype(float),
        "runtime_recordings_spooled_total": ended_calls,
        "runtime_recordings_uploaded_total": _cumulative(uploaded_at, readings),
        "runtime_recording_uploaded_bytes_total": _cumulative(uploaded_at, readings, rec_bytes).round(),
        "runtime_recording_spool_entries": ended_calls - _cumulative(uploaded_at, readings),
    }
    labelled: dict[tuple[str, tuple[tuple[str, str], ...]], np.ndarray] = {
        ("runtime_breaker_state", (("provider", "deepgram"), ("role", "stt"))): breaker,
        ("runtime_breaker_trips_total", (("provider", "deepgram"), ("role", "stt"))): trips,
        ("runtime_provider_errors_total", (("provider", "deepgram"), ("reason", "timeout"), ("service", "stt"))):
            np.floor(_cumulative(t_reply[in_fault & ~rerouted], readings) * 0.4) + trips * 5,
        ("runtime_provider_fallbacks_total", (("from", "deepgram"), ("role", "stt"), ("to", "assemblyai"))):
            _cumulative(t_reply[rerouted], readings),
        ("runtime_workflow_events_total", (("outcome", "ok"),)): ended_calls,
        ("runtime_recordings_total", (("outcome", "stored"),)): ended_calls,
    }
    for code, label in RUNTIME_OUTCOMES.items():
        chosen = calls.outcome == code
        at = calls.start[chosen] if code == REJECTED else calls.end[chosen]
        labelled[("runtime_calls_total", (("outcome", label),))] = _cumulative(at, readings)

    values = np.zeros((k, len(keys)))
    histograms: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
    for column, key in enumerate(keys):
        name, labels = _split(key)
        le = labels.pop("le", None)
        ident = tuple(sorted(labels.items()))
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and (name.removesuffix(suffix), ident) in observations:
                base = (name.removesuffix(suffix), ident)
                if base not in histograms:
                    histograms[base] = {}
                series = histograms[base]
                if suffix == "_bucket":
                    series[column] = math.inf if le in (None, "+Inf") else float(le)  # filled below
                else:
                    at, observed = observations[base]
                    values[:, column] = (_cumulative(at, readings) if suffix == "_count"
                                         else _cumulative(at, readings, observed).round(6))
                break
        else:
            if (name, ident) in labelled:
                values[:, column] = labelled[(name, ident)]
            elif not labels and name in simple:
                values[:, column] = simple[name]
    for base, buckets in histograms.items():
        at, observed = observations[base]
        for column, upper in buckets.items():
            values[:, column] = _cumulative(at[observed <= upper], readings)
    return keys, values


def write_runtime_metrics(path: Path, keys: list[str], values: np.ndarray, readings: np.ndarray) -> int:
    size = 0
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for row, at in enumerate(readings.tolist()):
            samples = dict(zip(keys, values[row].tolist(), strict=True))
            chunk.append(orjson.dumps({"t": at, "samples": samples}) + b"\n")
            if len(chunk) >= 256:
                size += out.write(b"".join(chunk))
                chunk = []
        size += out.write(b"".join(chunk))
    return size


# --- summary.json ---------------------------------------------------------------------------------------------------


# --- the run folder -------------------------------------------------------------------------------------------------


def _dependencies() -> dict[str, dict[str, Any]]:
    """The embedded stack's wiring as ``stack_started`` logs it: a fake (or the S3 store) behind a proxy each."""
    fakes = {"stt": "deepgram", "tts": "elevenlabs", "llm": "openai", "crm": "crm", "storage": "storage",
             "stt_fallback": "assemblyai", "tts_fallback": "deepgram", "llm_fallback": "anthropic"}
    ports = {"deepgram": 41711, "elevenlabs": 41712, "openai": 41713, "crm": 41714, "storage": 41715,
             "assemblyai": 41716, "anthropic": 41717}
    out = {}
    for index, (name, service) in enumerate(fakes.items()):
        upstream = f"http://127.0.0.1:{ports[service]}"
        out[name] = {"service": service, "upstream": upstream, "proxy": name,
                     "proxied_url": f"http://127.0.0.1:{41730 + index}",
                     "control_url": None if service == "storage" else f"{upstream}/_chaos"}
    return out


def write_run(run_dir: Path, *, calls: int, turns_per_call: int = 5, seed: int = 1,
              with_runtime_metrics: bool = True, duration_s: float = 7200.0) -> dict[str, Any]:
    """Write a run folder of ``calls`` calls of ``turns_per_call`` agent turns each (the greeting included), spread
    over about ``duration_s`` seconds of load, with one fault window (STT latency) from 40 % to 50 % of it.
    Returns what was written: counts, bytes per file and the seconds it took."""
    began = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = script_steps(turns_per_call)
    call_s = _audio_s(GREETING.heard) + 0.6 + sum(0.3 + 0.065 * len(s.text or "") + 0.4 + 0.6 + _audio_s(s.heard)
                                                  + 0.4 for s in steps[1:])
    span = max(duration_s - call_s - 2.0, duration_s * 0.25)
    spacing = span / max(calls, 1)
    capacity = max(50, math.ceil(1.3 * call_s / spacing))
    scenario, config = build_scenario(calls=calls, steps=steps, duration_s=duration_s, arrival_rate=1 / spacing,
                                      capacity=capacity, seed=seed)
    fault: Fault = scenario.faults[0]
    assert fault.duration is not None
    applied_at = round(fault.at + 0.004, 3)
    removed_at = round(fault.at + fault.duration + 0.003, 3)
    data = draw_calls(rng, calls=calls, steps=steps, spacing=spacing, fault=(applied_at, removed_at))
    run_end_s = round(float(np.nanmax(data.end)) + 0.01, 3) if calls else 0.0
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    readings = np.round(np.arange(0.0, run_end_s, 5.003) + 0.021, 3)
    readings = np.append(readings[readings < run_end_s], round(run_end_s + 0.05, 3))
    keys: list[str] = []
    values = np.zeros((0, 0))
    if with_runtime_metrics:
        keys, values = runtime_readings(data, rng, readings=readings, fault=(applied_at, removed_at),
                                        capacity=capacity)
    counters_delta: dict[str, float] = {}
    if with_runtime_metrics:
        at_apply = int(np.searchsorted(readings, applied_at))
        at_remove = min(int(np.searchsorted(readings, removed_at)), len(readings) - 1)
        for column, key in enumerate(keys):
            if key.split("{", 1)[0].endswith("_total"):
                delta = round(float(values[at_remove, column] - values[min(at_apply, at_remove), column]), 6)
                if delta:
                    counters_delta[f"runtime:{key}"] = delta

    connected = int(data.connected.sum())
    lateness = {"frames": int(sum(int(d * 50) for d in data.duration[data.connected & (data.nturns > 0)])),
                "p50_ms": 0.8, "p99_ms": 2.1,
                "max_ms": round(float(data.lateness_max_ms.max()), 2) if calls else None, "mean_ms": 0.85}
    recordings = {"store": _dependencies()["storage"]["upstream"], "bucket": "voicechaos-recordings",
                  "calls_with_media": connected, "arrived": connected, "missing": 0, "missing_call_sids": [],
                  "listing_error": None}
    window = {"index": 0, "label": fault.label, "target": fault.target, "action": fault.action,
              "spec": fault.describe(), "planned_at_s": fault.at,
              "planned_until_s": round(fault.at + fault.duration, 3), "applied_at_s": applied_at,
              "removed_at_s": removed_at, "removed_because": "scheduled end",
              "details": {"proxy": fault.target, "toxic": "latency_downstream_fault0"}, "error": None,
              "rollback_error": None, "counters_delta": counters_delta}
    # the harness's own parts of summary.json; the figures and verdicts are the report's, which recomputes them
    # from the lines (tests/test_report_browser.py checks they agree with harness.summary)
    summary: dict[str, Any] = {"verdict": None, "harness_lateness": lateness}
    summary["scenario"] = scenario.name
    summary["run_dir"] = str(run_dir)
    summary["calls_planned"] = calls
    call_seconds = float(np.nansum(data.duration[data.connected]))
    summary["cpu_s"] = {"harness": round(0.004 * call_seconds + 2.0, 2), "deepgram": round(0.002 * call_seconds, 2),
                        "elevenlabs": round(0.003 * call_seconds, 2), "openai": round(0.001 * call_seconds, 2),
                        "runtime": round(0.01 * call_seconds + 3.0, 2)}
    summary["toxiproxy"] = {"which": "the embedded Toxiproxy (no TOXIPROXY_URL, no toxiproxy-server on PATH)",
                            "url": "http://127.0.0.1:41729"}
    summary["dependencies"] = _dependencies()
    summary["recordings"] = recordings
    if with_runtime_metrics:
        first = dict(zip(keys, values[0].tolist(), strict=True))
        last = dict(zip(keys, values[-1].tolist(), strict=True))
        plain = [column for column, key in enumerate(keys) if not key.split("{", 1)[0].endswith("_bucket")]
        history = [(at, {keys[c]: float(values[row, c]) for c in plain}) for row, at in enumerate(readings.tolist())]
        sampler = SimpleNamespace(first=first, last=last, history=history)
        summary["runtime_metrics"] = {"url": f"{RUNTIME_URL}/metrics", "readings": len(readings),
                                      "failed_readings": 0, "file": "runtime_metrics.jsonl",
                                      "figures": runtime_figures(sampler)}  # type: ignore[arg-type]
    summary["runtime_restarts"] = 0
    summary["faults"] = [window]
    summary["config"] = config

    events_path = run_dir / "events.jsonl"
    writer = _Writer(events_path)
    wall = LOAD_WALL
    writer.now(wall - 2.1, _event("run_started", wall - 2.1, {"scenario": scenario.name, "run_dir": str(run_dir),
                                                              "calls": calls, "config": config}))
    deps = _dependencies()
    writer.now(wall - 0.9, _event("stack_started", wall - 0.9, {
        "runtime_url": RUNTIME_URL,
        "providers": {name: deps[dep]["upstream"] for dep, name in (("stt", "deepgram"), ("tts", "elevenlabs"),
                                                                    ("llm", "openai"), ("crm", "crm"),
                                                                    ("stt_fallback", "assemblyai"),
                                                                    ("llm_fallback", "anthropic"))},
        "toxiproxy": summary["toxiproxy"]["which"], "toxiproxy_url": summary["toxiproxy"]["url"],
        "dependencies": deps}))
    writer.now(wall + 0.000012, _event("load_started", wall + 0.000012, {"mono": LOAD_MONO, "wall": wall}))
    writer.later(wall + applied_at, _event("fault_applied", wall + applied_at, {
        "fault": 0, "label": fault.label, "target": fault.target, "action": fault.action, "spec": fault.describe(),
        "at_s": applied_at, "planned_at_s": fault.at, "details": window["details"]}))
    writer.later(wall + removed_at, _event("fault_removed", wall + removed_at, {
        "fault": 0, "label": fault.label, "target": fault.target, "at_s": removed_at, "because": "scheduled end",
        "counters_delta": counters_delta}))
    write_calls(writer, data, steps)
    writer.drain()
    finished = wall + run_end_s
    writer.now(finished + 0.6, _event("recordings_counted", finished + 0.6, recordings))
    writer.now(finished + 1.2, _event("stack_stopped", finished + 1.2, {"cpu_s": {
        k: v for k, v in summary["cpu_s"].items() if k != "harness"}}))
    writer.now(finished + 1.25, _event("run_finished", finished + 1.25, {"verdict": summary["verdict"],
                                                                          "interrupted": None}))
    writer.close()
    check_shapes(events_path)

    metrics_bytes = 0
    if with_runtime_metrics:
        metrics_bytes = write_runtime_metrics(run_dir / "runtime_metrics.jsonl", keys, values, readings)
    summary_text = json.dumps(summary, indent=2, default=str)
    (run_dir / "summary.json").write_text(summary_text)
    events_bytes = events_path.stat().st_size
    return {"run_dir": str(run_dir), "calls": calls, "turns": int(data.turn_mask().sum()), "events": writer.lines,
            "events_bytes": events_bytes, "runtime_readings": len(readings) if with_runtime_metrics else 0,
            "runtime_metrics_bytes": metrics_bytes, "summary_bytes": len(summary_text),
            "total_bytes": events_bytes + metrics_bytes + len(summary_text), "verdict": summary["verdict"],
            "seconds": round(time.perf_counter() - began, 2)}
