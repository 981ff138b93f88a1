"""Runs across nights: an index of every reported run, and a trend page of the key metrics.

``history_dir/index.jsonl`` holds one JSON object per run (see ``entry``), keyed by the run folder: reporting a run
again replaces its line. The file is rewritten whole through a temporary file and ``os.replace``, so a crash leaves the
old index or the new one, never half of it; a torn or foreign line (from an older writer or a hand edit) is skipped
when read, not fatal, and dropped at the next rewrite.

``history_dir/trend.html`` is one self-contained page (plots as base64 PNG data URIs, no script, no network): a table
of runs linking to each ``report.html``, and one plot per key metric with one line per scenario (a soak and a demo
are not the same line), failing runs in red and the target as a dashed line when it has a number.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.model import FAIL

INDEX, TREND = "index.jsonl", "trend.html"
INVALID = "invalid"  # the run verdict when the harness was the bottleneck (summary.json "verdict")
KEY_METRICS = ("response_latency_p95_ms", "worker_availability", "call_success_rate", "max_silence_gap_ms",
               "phrase_decode_rate", "memory_growth_mb_per_1000_calls", "breaker_trips_per_hour",
               "harness_lateness_p99_ms")
_TARGET_NUMBER = re.compile(r"^\s*(?:<=|>=|<|>|=)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def _run_key(run_dir: str) -> str:
    # One run reported from two working directories must still be one line.
    return str(Path(run_dir).resolve())


def entry(summary: dict[str, Any], report_path: Path, history_dir: Path) -> dict[str, Any]:
    """The index line of one run: what the trend page needs, nothing of the run's bulk."""
    report_meta = summary.get("report") or {}
    rows = [row for row in summary.get("targets") or [] if isinstance(row, dict) and "metric" in row]
    try:
        report = os.path.relpath(Path(report_path).resolve(), Path(history_dir).resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        report = str(Path(report_path).resolve())
    return {
        "run_dir": _run_key(str(summary.get("run_dir") or Path(report_path).parent)),
        "scenario": summary.get("scenario"),
        "started_at": report_meta.get("started_at"),
        "generated_at": report_meta.get("generated_at"),
        "verdict": summary.get("verdict"),
        "metrics": {row["metric"]: row.get("measured") for row in rows},
        "verdicts": {row["metric"]: row.get("verdict") for row in rows},
        "targets": {row["metric"]: row.get("target") for row in rows},
        "report": report,
    }


def read_index(history_dir: Path) -> list[dict[str, Any]]:
    """Every readable line of the index, in file order; torn or foreign lines are skipped."""
    path = Path(history_dir) / INDEX
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("run_dir"), str):
            entries.append(item)
    return entries


def append(history_dir: Path, summary: dict[str, Any], report_path: Path) -> Path:
    """Add (or replace) this run's line in ``history_dir/index.jsonl``; returns the index's path."""
    history_dir = Path(history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    new = entry(summary, report_path, history_dir)
    kept = [item for item in read_index(history_dir) if _run_key(item["run_dir"]) != new["run_dir"]]
    path = history_dir / INDEX
    tmp = path.with_name(f".{INDEX}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(item) + "\n" for item in [*kept, new]), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _when(item: dict[str, Any]) -> float | None:
    for key in ("started_at", "generated_at"):
        value = item.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _date(epoch: float | None) -> str:
    return "unknown" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _measured(item: dict[str, Any], metric: str) -> float | None:
    value = (item.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _target_number(target: Any) -> float | None:
    match = _TARGET_NUMBER.match(str(target or ""))
    return float(match.group(1)) if match else None


def _failed(item: dict[str, Any], metric: str) -> bool:
    # The run failed (a target missed, or the harness was the bottleneck), or this very metric missed its target.
    return item.get("verdict") in (FAIL, INVALID) or (item.get("verdicts") or {}).get(metric) == FAIL


def _plot(metric: str, runs: list[dict[str, Any]], by_time: bool) -> bytes:
    """One metric across runs, one line per scenario; red points for failing runs; dashed target lines."""
    fig = Figure(figsize=(5.2, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    scenarios = sorted({str(item.get("scenario")) for item in runs})
    colors = [f"C{i % 10}" for i in range(len(scenarios))]
    target_values: set[float] = set()
    any_failed = False
    for scenario, color in zip(scenarios, colors, strict=True):
        points = [(i, item) for i, item in enumerate(runs)
                  if str(item.get("scenario")) == scenario and _measured(item, metric) is not None]
        if not points:
            continue
        xs = [datetime.fromtimestamp(_when(item), UTC) if by_time else i + 1 for i, item in points]
        ys = [_measured(item, metric) for _, item in points]
        ax.plot(xs, ys, marker="o", color=color, label=scenario, markersize=4)
        bad = [(x, y) for x, y, (_, item) in zip(xs, ys, points, strict=True) if _failed(item, metric)]
        if bad:
            ax.scatter(*zip(*bad, strict=True), color="red", zorder=3, s=30)
        # The scenario's latest target: a target changed in the scenario file applies from then on.
        targets = [_target_number((item.get("targets") or {}).get(metric)) for _, item in points]
        latest = next((t for t in reversed(targets) if t is not None), None)
        if latest is not None:
            target_values.add(latest)
        any_failed = any_failed or bool(bad)
    # Scenarios usually share a target: one grey line per distinct value keeps the plot readable.
    for i, value in enumerate(sorted(target_values)):
        ax.axhline(value, color="grey", linestyle="--", linewidth=1, label="target" if i == 0 else None)
    if any_failed:
        ax.scatter([], [], color="red", s=30, label="failed run")
    ax.set_title(metric, fontsize=9)
    ax.set_xlabel("run start (UTC)" if by_time else "run", fontsize=8)
    ax.tick_params(labelsize=7)
    if by_time:
        fig.autofmt_xdate()
    ax.legend(fontsize=7, loc="best")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def trend_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """The key metrics measured at least once, then any other metric measured in at least two runs."""
    counts: dict[str, int] = {}
    for item in runs:
        for metric in item.get("metrics") or {}:
            counts[metric] = counts.get(metric, 0) + (_measured(item, metric) is not None)
    others = sorted(m for m, n in counts.items() if n >= 2 and m not in KEY_METRICS)
    return [m for m in KEY_METRICS if counts.get(m)] + others


def render_trend(history_dir: Path) -> Path:
    """Write ``history_dir/trend.html`` from the index; returns its path."""
    history_dir = Path(history_dir)
    history_dir.mkdir(parents=True, exist_ok=True)
    runs = sorted(read_index(history_dir), key=lambda item: (_when(item) is None, _when(item) or 0.0))
    by_time = all(_when(item) is not None for item in runs)
    rows = []
    for item in reversed(runs):  # newest first: the morning's question is "what happened last night"
        verdict = str(item.get("verdict"))
        link = f'<a href="{html.escape(str(item.get("report")))}">report</a>' if item.get("report") else ""
        rows.append(f'<tr class="{html.escape(verdict)}"><td>{_date(_when(item))}</td>'
                    f'<td>{html.escape(str(item.get("scenario")))}</td><td>{html.escape(verdict)}</td>'
                    f'<td>{link}</td></tr>')
    metrics = trend_metrics(runs)
    plots = [f'<figure><img alt="{html.escape(m)}" src="data:image/png;base64,'
             f'{base64.b64encode(_plot(m, runs, by_time)).decode("ascii")}"></figure>' for m in metrics]
    missing = [m for m in KEY_METRICS if m not in metrics]
    note = f"<p>Not measured in any run: {html.escape(', '.join(missing))}.</p>" if missing and runs else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>voicechaos trend</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; }}
tr.fail td, tr.invalid td {{ background: #fdd; }} tr.pass td {{ background: #dfd; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>voicechaos: runs across time</h1>
<p>{len(runs)} runs. Red points: runs that failed. Dashed lines: the target. One line per scenario.</p>
<h2>Metrics across runs</h2>
{"".join(plots) or "<p>No metric has been measured yet.</p>"}
{note}
<h2>Runs</h2>
<table><thead><tr><th>date</th><th>scenario</th><th>verdict</th><th>report</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
    path = history_dir / TREND
    path.write_text(page, encoding="utf-8")
    return path
