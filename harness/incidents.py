"""``voicechaos incident``: reproduce a public incident against the reference runtime, broken then fixed, and print
the contrast.

An incident is a scenario file in ``scenarios/incidents/`` with an ``incident:`` section: the safeguard it is about,
and checks on measured figures that each side must show (``worker_availability: broken < 0.999, fixed >= 0.999``).
The same scenario runs twice, with ``safeguards.<safeguard>`` set to ``broken`` and then ``fixed`` (plus each side's
overrides); every check is judged on what was measured, never on the mode flag. A figure that was not measured fails
its check.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from harness.chaos.faults import DEPENDENCIES
from harness.run import RunResult, run_scenario
from harness.scenario import Check, Scenario, ScenarioError, load_scenario, scenario_from_mapping
from harness.stack import build_runtime_config, deep_merge, load_agent

ROOT = Path(__file__).resolve().parent.parent
INCIDENTS_DIR = ROOT / "scenarios" / "incidents"
MODES = ("broken", "fixed")


def incident_paths(directory: Path = INCIDENTS_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def resolve(name: str, directory: Path = INCIDENTS_DIR) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = directory / f"{name}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(p.stem for p in incident_paths(directory))
    raise ScenarioError(name, [("", f"no such incident; known: {known}")])


def variant(scenario: Scenario, mode: str, *, quick: bool) -> Scenario:
    """The scenario as run on one side: quick overrides, that side's overrides, and the safeguard's mode."""
    incident = scenario.incident
    assert incident is not None
    data = scenario.model_dump(mode="json", exclude_none=True)
    if quick:
        data = deep_merge(data, incident.quick)
    data = deep_merge(data, incident.broken if mode == "broken" else incident.fixed)
    data = deep_merge(data, {"target": {"embedded": {"runtime": {"safeguards": {incident.safeguard: mode}}}}})
    data["name"] = f"{scenario.name}-{mode}{'-quick' if quick else ''}"
    return scenario_from_mapping(data, f"{scenario.name} ({mode})")


def measured(summary: dict[str, Any]) -> dict[str, float | None]:
    """Every figure a check can name: the targets table's measured values, the runtime's figures, and counts."""
    out: dict[str, float | None] = {row["metric"]: row["measured"] for row in summary.get("targets", [])}
    out.update((summary.get("runtime_metrics") or {}).get("figures") or {})
    outcomes = summary.get("calls", {}).get("outcomes", {})
    out["calls"] = float(summary.get("calls", {}).get("total", 0))
    for outcome in ("completed", "rejected", "dropped", "failed_to_connect", "timed_out", "error"):
        out[f"calls_{outcome}"] = float(outcomes.get(outcome, 0))
    out["runtime_restarts"] = float(summary.get("runtime_restarts", 0))
    return out


@dataclass
class Side:
    mode: str
    result: RunResult | None = None
    figures: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, bool | None] = field(default_factory=dict)  # check metric -> held (None: not measured)

    @property
    def invalid(self) -> bool:
        return self.result is not None and self.result.summary.get("verdict") == "invalid"

    @property
    def holds(self) -> bool:
        return bool(self.verdicts) and all(v is True for v in self.verdicts.values())


@dataclass
class IncidentResult:
    scenario: Scenario
    sides: list[Side]

    @property
    def exit_code(self) -> int:
        if any(side.invalid for side in self.sides):
            return 2
        return 0 if all(side.holds for side in self.sides) else 1


def judge(checks: list[Check], mode: str, figures: dict[str, float | None]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for check in checks:
        expression = check.broken if mode == "broken" else check.fixed
        if expression is not None:
            out[check.metric] = Check.holds(expression, figures.get(check.metric))
    return out


async def run_incident(path: Path, *, quick: bool, runs_dir: Path, out: TextIO,
                       modes: tuple[str, ...] = MODES) -> IncidentResult:
    scenario = load_scenario(path)
    if scenario.incident is None:
        raise ScenarioError(str(path), [("incident", "this scenario is not an incident (no incident: section)")])
    incident = scenario.incident
    out.write(f"voicechaos incident {scenario.name}: {incident.title}\n"
              f"  safeguard: {incident.safeguard}; runs: {', '.join(modes)}{' (quick)' if quick else ''}\n")
    sides = []
    for mode in modes:
        side = Side(mode)
        run = variant(scenario, mode, quick=quick)
        out.write(f"  running {mode} ({run.callers.count} calls, up to {run.limits.duration:g} s)...\n")
        out.flush()
        console = io.StringIO()
        side.result = await run_scenario(run, path, runs_dir=runs_dir, out=console)
        (side.result.run_dir / "console.txt").write_text(console.getvalue())
        side.figures = measured(side.result.summary)
        if incident.mismatched_config is not None:
            refused, why = await runtime_start_refused(run, incident.mismatched_config, path, side.result.run_dir)
            side.figures["mismatched_config_refused"] = 1.0 if refused else 0.0
            out.write(f"  {mode}: a runtime started with the mismatched config "
                      f"{'refused: ' + why if refused else 'started anyway'}\n")
        side.verdicts = judge(incident.checks, mode, side.figures)
        out.write(f"  {mode}: {side.result.summary['verdict'].upper()} against the targets; run folder "
                  f"{side.result.run_dir}\n")
        sides.append(side)
    result = IncidentResult(scenario, sides)
    _side_by_side_reports(result, out)
    print_contrast(result, out)
    return result


def _side_by_side_reports(result: IncidentResult, out: TextIO) -> None:
    """Tell each run folder about the incident and its other side, and redraw their reports with the contrast."""
    from reports.build import INCIDENT_FILE, build_report

    incident = result.scenario.incident
    assert incident is not None
    sides = {side.mode: {"run_dir": str(side.result.run_dir), "verdict": side.result.summary.get("verdict"),
                         "figures": {c.metric: side.figures.get(c.metric) for c in incident.checks},
                         "checks": side.verdicts}
             for side in result.sides if side.result is not None}
    record = {"name": result.scenario.name, "title": incident.title, "safeguard": incident.safeguard,
              "checks": [c.model_dump(mode="json") for c in incident.checks], "sides": sides}
    for side in result.sides:
        if side.result is None:
            continue
        (side.result.run_dir / INCIDENT_FILE).write_text(json.dumps({**record, "mode": side.mode}, indent=2))
        try:
            report = build_report(side.result.run_dir)
        except Exception as exc:  # the runs and their numbers stand; only the page is missing
            out.write(f"  {side.mode}: the report could not be built ({exc.__class__.__name__}: {exc})\n")
            continue
        out.write(f"  {side.mode}: report {report.html_path}\n")


async def runtime_start_refused(run: Scenario, mismatch: dict[str, Any], scenario_path: Path,
                                run_dir: Path) -> tuple[bool, str]:
    """Start the reference runtime with this side's settings plus ``mismatch`` (no call is placed): did its start
    refuse the config? Returns (refused, the reason it gave). The process is ended by its PID either way."""
    embedded = run.target.embedded
    assert embedded is not None
    agent = load_agent((scenario_path.parent / embedded.agent).resolve())
    nowhere = "http://127.0.0.1:9"  # never called: the runtime is only started
    urls = {name: nowhere for name in DEPENDENCIES}
    config = build_runtime_config(agent, deep_merge(embedded.runtime, mismatch), urls=urls,
                                  s3={"endpoint_url": nowhere, "bucket": "unused"}, capacity=1)
    path = run_dir / "mismatched-runtime.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reference_runtime", "serve", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(60):
            while line := await process.stdout.readline():
                if b'"listening"' in line:
                    return False, ""
            await process.wait()
            reason = (await process.stderr.read()).decode(errors="replace").strip().splitlines()
            return True, (reason[-1].strip(" -") if reason else f"exit code {process.returncode}")
    except TimeoutError:
        return False, "no answer within 60 s"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def _fmt(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:g}" if isinstance(value, float) else str(value)


def print_contrast(result: IncidentResult, out: TextIO) -> None:
    incident = result.scenario.incident
    assert incident is not None
    by_mode = {side.mode: side for side in result.sides}
    out.write(f"\n{result.scenario.name}: {incident.title}\n")
    out.write(f"{'metric':<28} {'broken must':<13} {'broken measured':<22} {'fixed must':<13} {'fixed measured':<22}\n")
    for check in incident.checks:
        cells = []
        for mode, expression in (("broken", check.broken), ("fixed", check.fixed)):
            side = by_mode.get(mode)
            if side is None:
                cells += [expression or "-", "(not run)"]
                continue
            value = _fmt(side.figures.get(check.metric))
            held = side.verdicts.get(check.metric)
            mark = "" if expression is None else " OK" if held else " MISSED" if held is False else " NOT MEASURED"
            cells += [expression or "-", f"{value}{mark}"]
        out.write(f"{check.metric:<28} {cells[0]:<13} {cells[1]:<22} {cells[2]:<13} {cells[3]:<22}\n")
    for side in result.sides:
        if side.invalid:
            out.write(f"{side.mode}: INVALID: the harness was late on its 20 ms grid; no verdict on the runtime\n")
        else:
            what = ("shows the incident" if side.mode == "broken" else "holds") if side.holds else (
                "does NOT show the incident" if side.mode == "broken" else "does NOT hold")
            out.write(f"{side.mode}: {what}\n")
    out.flush()


def describe_all(directory: Path = INCIDENTS_DIR) -> list[tuple[str, str]]:
    rows = []
    for path in incident_paths(directory):
        data = yaml.safe_load(path.read_text()) or {}
        rows.append((path.stem, str((data.get("incident") or {}).get("title", ""))))
    return rows
