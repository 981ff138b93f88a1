"""Read a run folder back into tables (RUN_FOLDER.md).

``events.jsonl`` is the source of truth, written line by line as the run happens so that a crash loses nothing. A
soak leaves millions of lines, so the call records are compiled once into columnar files (``records/*.parquet``),
in chunks, and later reports read only those. Whatever cannot be read is named in ``RunData.missing``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reports.model import CALL_COLUMNS, GAP_COLUMNS, TURN_COLUMNS, FaultWindow, RunData, RuntimeSeries

RECORDS = "records"
FORMAT = 3  # bumped when the tables change: older compiled records are rebuilt
CHUNK_CALLS = 20_000  # calls per Parquet row group: bounded memory whatever the length of the run

_CALL_TYPES = {"call_id": pa.int64(), "call_sid": pa.string(), "outcome": pa.string(), "reason": pa.string(),
               "start_s": pa.float64(), "end_s": pa.float64(), "connect_ms": pa.float64(),
               "duration_s": pa.float64(), "answered": pa.bool_(), "turns": pa.int32(), "heard": pa.int32(),
               "undecodable": pa.int32(), "protocol_errors": pa.int32(), "close_code": pa.float64(),
               "event_line": pa.int64(), "transport": pa.string(), "group": pa.string(),
               "concealed_ms": pa.float64(), "rtp_packets_received": pa.float64(), "rtp_packets_lost": pa.float64(),
               "rtp_jitter_ms": pa.float64()}
_TURN_TYPES = {"call_id": pa.int64(), "index": pa.int32(), "step": pa.int32(), "kind": pa.string(),
               "status": pa.string(), "caller_text": pa.string(), "at_s": pa.float64(),
               "response_latency_ms": pa.float64(), "first_audio": pa.bool_(), "max_gap_ms": pa.float64(),
               "gaps": pa.int32(), "heard": pa.int32(), "undecodable": pa.int32(), "has_expected": pa.bool_(),
               "barge_in": pa.bool_(), "barge_in_reaction_ms": pa.float64(), "cut_phrases": pa.int32(),
               "audio_symbols": pa.int32(), "audio_symbols_clear": pa.int32(), "concealed_ms": pa.float64()}
_GAP_TYPES = {"call_id": pa.int64(), "turn_index": pa.int32(), "at_s": pa.float64(), "gap_ms": pa.float64()}
SCHEMAS = {name: pa.schema([(c, types[c]) for c in columns]) for name, columns, types in (
    ("calls", CALL_COLUMNS, _CALL_TYPES), ("turns", TURN_COLUMNS, _TURN_TYPES), ("gaps", GAP_COLUMNS, _GAP_TYPES))}

# what a line starts with, so the per-turn lines (the bulk of a log, repeated in call_ended) are skipped unparsed
_SKIP_PREFIXES = (b'{"event":"turn"', b'{"event":"call_connected"', b'{"event":"stray_clear"',
                  b'{"event":"protocol_error"')


class RunFolderError(Exception):
    """The folder is not a run folder at all (no event log): nothing to report on."""


def answered(call: dict[str, Any]) -> bool:
    """Worker availability's unit (the same rule as harness.summary.answered): not refused, greeting heard."""
    if str(call.get("outcome")) in ("rejected", "failed_to_connect"):
        return False
    for turn in call.get("turns") or ():
        if turn.get("kind") == "greeting":
            return turn.get("first_audio_at") is not None
    return True


class _Columns:
    """Column lists for one chunk of calls."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, list[Any]]] = {name: {c: [] for c in schema.names}
                                                      for name, schema in SCHEMAS.items()}
        self.calls = 0

    def add_call(self, call: dict[str, Any], line: int, load: tuple[float | None, float | None]) -> None:
        mono, wall = load
        started = call.get("started_at")
        start_s = started - wall if wall is not None and started else None
        duration = call.get("duration_s")
        turns = call.get("turns") or []
        calls = self.data["calls"]
        calls["call_id"].append(call.get("call_id"))
        calls["call_sid"].append(call.get("call_sid"))
        calls["outcome"].append(str(call.get("outcome") or "unfinished"))
        calls["reason"].append(call.get("reason") or "")
        calls["start_s"].append(start_s)
        calls["end_s"].append(start_s + duration if start_s is not None and duration is not None else None)
        calls["connect_ms"].append(call.get("connect_ms"))
        calls["duration_s"].append(duration)
        calls["answered"].append(answered(call))
        calls["turns"].append(len(turns))
        calls["heard"].append(sum(len(t.get("heard") or ()) for t in turns))
        calls["undecodable"].append(sum(int(t.get("undecodable") or 0) for t in turns))
        calls["protocol_errors"].append(int(call.get("protocol_errors") or 0))
        calls["close_code"].append(call.get("close_code"))
        calls["event_line"].append(line)
        calls["transport"].append(call.get("transport") or "twilio")
        calls["group"].append(call.get("group") or call.get("transport") or "twilio")
        calls["concealed_ms"].append(float(call.get("concealed_ms") or 0.0))
        for column in ("rtp_packets_received", "rtp_packets_lost", "rtp_jitter_ms"):
            calls[column].append(call.get(column))
        first_listen = next((t.get("listen_from") for t in turns if t.get("listen_from")), None)
        rows, gaps = self.data["turns"], self.data["gaps"]
        for turn in turns:
            listen = turn.get("listen_from")
            if mono is not None and listen is not None:
                at = listen - mono
            elif start_s is not None and listen is not None and first_listen is not None:
                at = start_s + (listen - first_listen)  # an old log without load_started: the call's own offset
            else:
                at = start_s
            gap_list = turn.get("gaps_ms") or []
            rows["call_id"].append(call.get("call_id"))
            rows["index"].append(turn.get("index"))
            rows["step"].append(turn.get("step"))
            rows["kind"].append(turn.get("kind"))
            rows["status"].append(turn.get("status"))
            rows["caller_text"].append(turn.get("caller_text"))
            rows["at_s"].append(at)
            rows["response_latency_ms"].append(turn.get("response_latency_ms"))
            rows["first_audio"].append(turn.get("first_audio_at") is not None)
            rows["max_gap_ms"].append(max(gap_list, default=0.0))
            rows["gaps"].append(len(gap_list))
            rows["heard"].append(len(turn.get("heard") or ()))
            rows["undecodable"].append(int(turn.get("undecodable") or 0))
            rows["has_expected"].append(bool(turn.get("expected")))
            rows["barge_in"].append(bool(turn.get("barge_in")))
            rows["barge_in_reaction_ms"].append(turn.get("barge_in_reaction_ms"))
            rows["cut_phrases"].append(int(turn.get("cut_phrases") or 0))
            rows["audio_symbols"].append(int(turn.get("audio_symbols") or 0))
            rows["audio_symbols_clear"].append(int(turn.get("audio_symbols_clear") or 0))
            rows["concealed_ms"].append(float(turn.get("concealed_ms") or 0.0))
            for gap in gap_list:
                gaps["call_id"].append(call.get("call_id"))
                gaps["turn_index"].append(turn.get("index"))
                gaps["at_s"].append(at)
                gaps["gap_ms"].append(gap)
        self.calls += 1

    def tables(self) -> dict[str, pa.Table]:
        return {name: pa.table(cols, schema=SCHEMAS[name]) for name, cols in self.data.items()}


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, 1)


def compile_records(run_dir: Path) -> dict[str, Any]:
    """Stream ``events.jsonl`` into ``records/{calls,turns,gaps}.parquet`` (chunk by chunk) and return what the
    log says besides the calls: load start, faults, config, recordings count, torn lines."""
    events = run_dir / "events.jsonl"
    out_dir = run_dir / RECORDS
    out_dir.mkdir(exist_ok=True)
    meta: dict[str, Any] = {"load": None, "faults": [], "config": None, "recordings": None, "torn_lines": 0,
                            "started_at": None, "finished_at": None, "unfinished": 0}
    writers = {name: pq.ParquetWriter(out_dir / f"{name}.parquet.tmp", schema) for name, schema in SCHEMAS.items()}
    open_calls: dict[Any, dict[str, Any]] = {}
    chunk = _Columns()
    fallback_wall: float | None = None
    try:
        for number, line in _lines(events):
            if line.startswith(_SKIP_PREFIXES):
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                meta["torn_lines"] += 1  # a line cut by a crash mid-write; everything before it stands
                continue
            kind = event.get("event")
            if kind == "call_ended":
                open_calls.pop(event.get("call_id"), None)
                chunk.add_call(event, number, meta["load"] or (None, fallback_wall))
                if chunk.calls >= CHUNK_CALLS:
                    _write(writers, chunk)
                    chunk = _Columns()
            elif kind == "call_started":
                if meta["load"] is None and fallback_wall is None:
                    fallback_wall = event.get("time")  # an older log without load_started: the first call's start
                open_calls[event.get("call_id")] = {**event, "outcome": "unfinished", "line": number}
            elif kind == "load_started":
                meta["load"] = (float(event["mono"]), float(event["wall"]))
            elif kind == "run_started":
                meta["config"] = event.get("config")
                meta["started_at"] = event.get("time")
            elif kind in ("fault_applied", "fault_removed", "fault_apply_failed", "fault_rollback_failed"):
                meta["faults"].append(event)
            elif kind == "recordings_counted":
                meta["recordings"] = {k: v for k, v in event.items() if k not in ("event", "time")}
            elif kind == "run_finished":
                meta["finished_at"] = event.get("time")
        # calls whose end was never logged (the harness was killed): kept, as unfinished, never as completed
        for call in open_calls.values():
            call.setdefault("started_at", call.get("time"))
            chunk.add_call(call, call["line"], meta["load"] or (None, fallback_wall))
            meta["unfinished"] += 1
        _write(writers, chunk)
    finally:
        for writer in writers.values():
            writer.close()
    for name in SCHEMAS:
        (out_dir / f"{name}.parquet.tmp").replace(out_dir / f"{name}.parquet")
    stat = events.stat()
    (out_dir / "meta.json").write_text(json.dumps({**meta, "format": FORMAT, "source": {
        "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}}))
    return meta


def _write(writers: dict[str, pq.ParquetWriter], chunk: _Columns) -> None:
    for name, table in chunk.tables().items():
        if table.num_rows:
            writers[name].write_table(table)


def _records_meta(run_dir: Path) -> dict[str, Any]:
    """The compiled records' metadata, compiling (again) when the event log is newer than them."""
    meta_path = run_dir / RECORDS / "meta.json"
    stat = (run_dir / "events.jsonl").stat()
    if meta_path.exists() and all((run_dir / RECORDS / f"{n}.parquet").exists() for n in SCHEMAS):
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") == FORMAT and meta.get("source") == {"size": stat.st_size,
                                                                       "mtime_ns": stat.st_mtime_ns}:
                return meta
        except (OSError, ValueError):
            pass
    return compile_records(run_dir)


def read_runtime_metrics(path: Path) -> RuntimeSeries | None:
    rows: list[dict[str, float]] = []
    first: dict[str, float] | None = None
    last: dict[str, float] = {}
    with path.open("rb") as handle:
        for line in handle:
            try:
                reading = orjson.loads(line)
                samples = reading["samples"]
                t = float(reading["t"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if first is None:
                first = samples
            last = samples
            rows.append({"t": t, **{k: v for k, v in samples.items() if "_bucket{" not in k}})
    if not rows or first is None:
        return None
    frame = pd.DataFrame(rows).set_index("t").sort_index()
    return RuntimeSeries(frame=frame, first=first, last=last)


def _fault_windows(events: list[dict[str, Any]], config: dict[str, Any] | None) -> list[FaultWindow]:
    labels = {i: f.get("label") or f"{f.get('action')} {f.get('target')}"
              for i, f in enumerate((config or {}).get("faults") or [])}
    windows: dict[int, dict[str, Any]] = {}
    for event in events:
        index = int(event.get("fault", -1))
        window = windows.setdefault(index, {"label": event.get("label") or labels.get(index, f"fault {index}"),
                                            "target": event.get("target") or "", "start_s": None, "end_s": None,
                                            "error": None})
        kind = event["event"]
        if kind in ("fault_applied", "fault_apply_failed"):
            window["start_s"] = event.get("at_s")
            if kind == "fault_apply_failed":
                window["error"] = event.get("error")
                window["end_s"] = event.get("at_s")
        elif kind == "fault_removed":
            window["end_s"] = event.get("at_s")
        elif kind == "fault_rollback_failed":
            window["error"] = f"rollback failed: {event.get('error')}"
    return [FaultWindow(w["label"], w["target"], float(w["start_s"]),
                        None if w["end_s"] is None else float(w["end_s"]), w["error"])
            for _, w in sorted(windows.items()) if w["start_s"] is not None]


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not (run_dir / "events.jsonl").is_file():
        if not run_dir.is_dir():
            raise RunFolderError(f"{run_dir}: no such folder")
        raise RunFolderError(f"{run_dir}: no events.jsonl here; is this a voicechaos run folder?")
    missing: list[str] = []
    meta = _records_meta(run_dir)
    tables = {name: pd.read_parquet(run_dir / RECORDS / f"{name}.parquet") for name in SCHEMAS}
    summary = None
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError as exc:
            missing.append(f"summary.json is not valid JSON ({exc}): the run's own summary is ignored")
    else:
        missing.append("summary.json: the run did not finish (killed or crashed); figures come from events.jsonl")
    runtime = None
    if (run_dir / "runtime_metrics.jsonl").is_file():
        runtime = read_runtime_metrics(run_dir / "runtime_metrics.jsonl")
    if runtime is None:
        missing.append("runtime_metrics.jsonl: no reading of the runtime's /metrics, so no runtime-side figure "
                       "(memory, CPU, providers, breakers, workflows)")
    if meta["load"] is None and len(tables["calls"]):
        missing.append("load_started event: an older log; turn times are placed from each call's own start")
    if meta["torn_lines"]:
        missing.append(f"{meta['torn_lines']} torn line(s) in events.jsonl were skipped")
    if meta["unfinished"]:
        missing.append(f"{meta['unfinished']} call(s) never logged their end (the harness stopped): counted as "
                       "unfinished")
    if not len(tables["calls"]):
        missing.append("calls: the event log holds no call")
    config = (summary or {}).get("config") or meta["config"]
    calls = tables["calls"]
    ends = [v for v in (calls["end_s"].max() if len(calls) else None,
                        runtime.frame.index.max() if runtime is not None else None) if v is not None]
    duration = float(max(ends)) if ends and not any(math.isnan(v) for v in ends) else None
    lateness = (summary or {}).get("harness_lateness")
    if lateness is None:
        missing.append("harness lateness: only summary.json holds it, so the harness's own timing is unknown")
    return RunData(run_dir=run_dir, calls=calls, turns=tables["turns"], gaps=tables["gaps"], summary=summary,
                   config=config, runtime=runtime, faults=_fault_windows(meta["faults"], config),
                   duration_s=duration, lateness=lateness,
                   recordings=(summary or {}).get("recordings") or meta["recordings"], missing=missing)
