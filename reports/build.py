"""``voicechaos report RUN_DIR``: read a run folder, judge it, and write ``report.html``, ``summary.json`` and
``junit.xml`` into it (also done at the end of every run). The exit code is what a nightly job needs: 0 when every
measured target held, 1 when one was missed (or nothing was measured), 2 when the harness itself was too late to
judge the agent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports import history
from reports.compare import compare
from reports.groups import by_group
from reports.html import Extras, render
from reports.junit import write_junit
from reports.metrics import fault_windows, judge, targets_of
from reports.model import PASS, TargetRow
from reports.plots import render_plots
from reports.runfolder import RunFolderError, load_run
from reports.triage import triage

EXIT_PASS, EXIT_FAIL, EXIT_INVALID = 0, 1, 2
INCIDENT_FILE = "incident.json"


@dataclass
class ReportResult:
    run_dir: Path
    html_path: Path
    summary_path: Path
    junit_path: Path
    verdict: str
    reason: str
    rows: list[TargetRow]
    summary: dict[str, Any]
    trend_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return {PASS: EXIT_PASS, "invalid": EXIT_INVALID}.get(self.verdict, EXIT_FAIL)

    @property
    def missed(self) -> list[TargetRow]:
        return [r for r in self.rows if r.verdict == "fail"]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def build_report(run_dir: Path, *, baseline: Path | None = None, history_dir: Path | None = None) -> ReportResult:
    """Raises RunFolderError when ``run_dir`` is not a run folder, and (for the baseline) when the baseline has
    no summary to compare with."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    rows, verdict, reason = judge(data)
    stacks = triage(data, rows, targets_of(data))
    summary: dict[str, Any] = dict(data.summary or {})
    started_at = summary.get("report", {}).get("started_at") if isinstance(summary.get("report"), dict) else None
    summary.update({
        "scenario": data.name, "run_dir": str(run_dir), "verdict": verdict, "verdict_reason": reason,
        "targets": [r.to_json() for r in rows], "config": data.config,
        "triage": [s.to_json() for s in stacks], "missing_inputs": data.missing,
        "fault_windows": fault_windows(data),
        "by_group": by_group(data),
        "report": {"generated_at": round(time.time(), 3),
                   "started_at": started_at or _started_at(run_dir), "html": "report.html", "junit": "junit.xml"},
    })
    extras = Extras()
    if baseline is not None:
        base = _read_json(Path(baseline) / "summary.json")
        if base is None:
            raise RunFolderError(f"--baseline {baseline}: no readable summary.json there")
        changes = [c.to_json() for c in compare(summary, base)]
        extras.changes, extras.baseline_dir = changes, str(baseline)
        summary["baseline"] = {"run_dir": str(baseline), "changes": changes,
                               "regressions": [c["metric"] for c in changes if c["regression"]]}
    incident = _read_json(run_dir / INCIDENT_FILE)
    if incident is not None:
        extras.incident = incident
        summary["incident"] = incident
    plots = render_plots(data)
    html_path = run_dir / "report.html"
    extras.groups = summary["by_group"]
    html_path.write_text(render(data, rows, verdict, reason, stacks, plots, extras), encoding="utf-8")
    summary_path = run_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    junit_path = run_dir / "junit.xml"
    write_junit(junit_path, data.name, rows, invalid_reason=reason if verdict == "invalid" else None)
    trend = None
    if history_dir is not None:
        history.append(Path(history_dir), summary, html_path)
        trend = history.render_trend(Path(history_dir))
    return ReportResult(run_dir=run_dir, html_path=html_path, summary_path=summary_path, junit_path=junit_path,
                        verdict=verdict, reason=reason, rows=rows, summary=summary, trend_path=trend)


def _started_at(run_dir: Path) -> float | None:
    """The run's start (wall clock), from the first line of its event log."""
    try:
        with (run_dir / "events.jsonl").open(encoding="utf-8") as handle:
            first = json.loads(handle.readline())
        return float(first.get("time"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def describe(result: ReportResult) -> str:
    """What the console says after a report: the verdict, each missed target by name, and where the files are."""
    lines = [f"voicechaos report: {result.verdict.upper()}: {result.reason}"]
    for row in result.missed:
        unit = "" if not row.unit else row.unit if row.unit == "%" else f" {row.unit}"
        lines.append(f"  missed {row.metric}: measured {row.measured:g}{unit}, "
                     f"target {row.target}")
    regressions = result.summary.get("baseline", {}).get("regressions") or []
    if regressions:
        lines.append(f"  regressions against the baseline: {', '.join(regressions)}")
    lines.append(f"  report: {result.html_path}")
    lines.append(f"  summary: {result.summary_path}; junit: {result.junit_path}")
    if result.trend_path is not None:
        lines.append(f"  trend: {result.trend_path}")
    return "\n".join(lines) + "\n"
