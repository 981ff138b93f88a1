"""How long ``voicechaos report`` takes, and how much memory it needs, on a run of a million turn records.

The goal (issue 5): a report over one million turn records in at most a minute and 2 GB on this 2-core machine. The
run folder is made by :mod:`bench.synthetic_run` (the harness's own file shapes, about 1.3 GB of ``events.jsonl``)
in a temporary folder that is deleted at the end (``--keep DIR`` keeps it). ``voicechaos report RUN_DIR`` then runs
twice, each time in a fresh process: first from ``events.jsonl`` alone (it compiles ``records/*.parquet``), then with
``records/`` already built (what a second look at the same run costs). Each run's wall time and peak RSS are taken
by a small wrapper process whose only child is the report (``getrusage(RUSAGE_CHILDREN)`` of that wrapper is the
report's own peak), so neither this process nor the other run is counted.

The synthetic run misses its targets by design (a fault window, dropped calls, dead air), so the report's exit code
is 1: the bench only requires that the report was written. The machine is shared: compare runs side by side rather
than quoting one.

Run: ``.venv/bin/python -m bench.report_scale [--turns 1000000] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.synthetic_run import write_run

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 60.0
GOAL_BYTES = 2 * 2**30
# a share of the turns is never recorded (refused calls, calls dropped mid-script): ask for a few % more calls
_TURNS_KEPT = 0.96
# run in a fresh interpreter: its children's peak RSS is the report's alone
_WRAPPER = """
import json, resource, subprocess, sys, time
out, command = sys.argv[1], sys.argv[2:]
began = time.perf_counter()
code = subprocess.call(command)
wall = time.perf_counter() - began
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as handle:
    json.dump({"returncode": code, "wall_s": wall, "max_rss_kb": usage.ru_maxrss, "user_s": usage.ru_utime,
               "sys_s": usage.ru_stime}, handle)
"""


class BenchError(Exception):
    pass


@dataclass
class Measure:
    label: str
    returncode: int
    wall_s: float
    peak_bytes: int
    cpu_s: float
    output: str


def measure_report(run_dir: Path, label: str, *, timeout_s: float) -> Measure:
    """One ``voicechaos report RUN_DIR`` in a fresh process: its wall time, peak RSS and CPU time."""
    command = [sys.executable, "-m", "harness.cli", "report", str(run_dir)]
    page = run_dir / "report.html"
    with tempfile.TemporaryDirectory(prefix="voicechaos-report-scale-") as scratch:
        result_path = Path(scratch) / "result.json"
        log_path = Path(scratch) / "output.txt"
        started = time.time()
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(result_path), *command], cwd=ROOT,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the wrapper and the report, by their group id
                process.wait()
                raise BenchError(f"{label}: the report did not finish within {timeout_s:g} s") from None
        output = log_path.read_text(errors="replace")
        if not result_path.is_file():
            raise BenchError(f"{label}: the measuring wrapper failed:\n{output[-2000:]}")
        result: dict[str, Any] = json.loads(result_path.read_text())
    if "invalid choice: 'report'" in output:
        raise BenchError("`voicechaos report` does not exist yet (harness/cli.py has no report subcommand): "
                         "nothing to measure")
    if not page.is_file() or page.stat().st_mtime < started - 1:
        raise BenchError(f"{label}: the report exited with {result['returncode']} and wrote no report.html:\n"
                         f"{output[-3000:]}")
    return Measure(label=label, returncode=int(result["returncode"]), wall_s=float(result["wall_s"]),
                   peak_bytes=int(result["max_rss_kb"]) * 1024, cpu_s=float(result["user_s"] + result["sys_s"]),
                   output=output)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def _row(run: str, measure: str, measured: str, goal: str = "-", ratio: float | None = None) -> str:
    verdict = "" if ratio is None else ("ok" if ratio >= 1 else "MISSED")
    shown = "" if ratio is None else f"{ratio:.2f}"
    return f"{run:<36} {measure:<9} {measured:>9}   {goal:<10} {shown:>13}   {verdict}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1_000_000, help="turn records in the run (at least)")
    parser.add_argument("--turns-per-call", type=int, default=5, help="agent turns per call, the greeting included")
    parser.add_argument("--duration", type=float, default=7200.0, help="seconds of load the run spans")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the run folder here and keep it (default: a temporary "
                                                  "folder, deleted at the end)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one report may take before it is "
                                                                     "stopped")
    args = parser.parse_args()
    calls = math.ceil(args.turns / (args.turns_per_call * _TURNS_KEPT))
    base = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="voicechaos-report-scale-"))
    run_dir = base / "run"
    try:
        base.mkdir(parents=True, exist_ok=True)
        need = int(args.turns * 1_450 * 1.3)  # bytes of events.jsonl per turn, plus the compiled records
        free = shutil.disk_usage(base).free
        if free < need:
            print(f"report_scale: {_gb(free)} free in {base}, about {_gb(need)} needed", file=sys.stderr)
            return 2
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a kept folder from before: start from the event log alone again
        print(f"generating {calls:,} calls of {args.turns_per_call} turns in {run_dir} ...", flush=True)
        written = write_run(run_dir, calls=calls, turns_per_call=args.turns_per_call, seed=args.seed,
                            duration_s=args.duration)
        print(f"  {written['turns']:,} turns, {written['events']:,} events, events.jsonl "
              f"{_gb(written['events_bytes'])}, runtime_metrics.jsonl {written['runtime_metrics_bytes'] / 2**20:.0f} "
              f"MB ({written['runtime_readings']} readings) in {written['seconds']:.1f} s", flush=True)
        measures = []
        for label in ("report, cold (compiles records/)", "report, warm (records/ built)"):
            print(f"running {label} ...", flush=True)
            measures.append(measure_report(run_dir, label, timeout_s=args.timeout))
            if len(measures) == 1:
                print(f"  records/ {_size(run_dir / 'records') / 2**20:.0f} MB", flush=True)
    except BenchError as exc:
        print(f"report_scale: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"{'run':<36} {'measure':<9} {'measured':>9}   {'goal':<10} {'goal/measured':>13}   verdict")
    print(_row(f"generate the run ({written['turns']:,} turns)", "wall", f"{written['seconds']:.1f} s"))
    for m in measures:
        print(_row(m.label, "wall", f"{m.wall_s:.1f} s", f"<= {GOAL_S:g} s", GOAL_S / m.wall_s))
        print(_row("", "peak RSS", _gb(m.peak_bytes), f"<= {_gb(GOAL_BYTES)}",
                   GOAL_BYTES / m.peak_bytes if m.peak_bytes else None))
        print(_row("", "CPU", f"{m.cpu_s:.1f} s"))
    codes = ", ".join(str(m.returncode) for m in measures)
    print(f"report exit codes: {codes} (the synthetic run misses targets by design: 1 is expected). "
          f"Run folder: {run_dir if args.keep else 'deleted'}.")
    last = measures[-1].output.strip().splitlines()
    if last:
        print("the report said:\n  " + "\n  ".join(last[-6:]))
    missed = any(m.wall_s > GOAL_S or m.peak_bytes > GOAL_BYTES for m in measures)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
