"""How many concurrent calls one reference-runtime process holds within the latency targets, with the fakes.

Runs the demo conversation (greeting, three turns, goodbye) on the embedded stack at rising concurrency: all calls of
a level arrive within a second or two and overlap for the whole conversation. For each level it prints the outcome
counts, response latency p95, the longest silence gap, and the harness's own lateness: a level where the harness was
late (p99 > 5 ms) says nothing about the runtime and is marked invalid. Everything shares this machine's cores
(harness, fakes, runtime), so read the levels side by side rather than as absolute capacity.

Run: ``.venv/bin/python -m bench.runtime_capacity --levels 25,50,100,200``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
from pathlib import Path

from harness.run import run_scenario
from harness.scenario import load_scenario, scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="25,50,100,200")
    args = parser.parse_args()
    demo_path = ROOT / "scenarios" / "demo.yaml"
    demo = load_scenario(demo_path).model_dump(mode="json")
    print(f"{'calls':>6} {'completed':>9} {'latency p50':>12} {'p95':>8} {'max gap':>8} {'lateness p99':>13} "
          f"{'runtime CPU ms per call-second':>31}  verdict")
    with tempfile.TemporaryDirectory() as runs:
        for calls in (int(x) for x in args.levels.split(",")):
            data = dict(demo)
            data["callers"] = {"count": calls, "concurrency": calls, "arrival_rate": max(20.0, calls / 2)}
            data["target"] = {"embedded": {**demo["target"]["embedded"], "capacity": calls + 10}}
            data["limits"] = {**demo["limits"], "duration": 300, "call_timeout": 240}
            scenario = scenario_from_mapping(data, f"capacity-{calls}")
            result = asyncio.run(run_scenario(scenario, demo_path, runs_dir=Path(runs), out=io.StringIO()))
            s = result.summary
            done = s["calls"]["outcomes"].get("completed", 0)
            latency = s["response_latency_ms"]
            call_seconds = sum(call.duration_s or 0.0 for call in result.calls)
            runtime_cpu = s["cpu_s"].get("runtime")
            per_call = f"{1000 * runtime_cpu / call_seconds:.1f}" if runtime_cpu and call_seconds else "-"
            print(f"{calls:>6} {done:>9} {latency['p50']!s:>12} {latency['p95']!s:>8} "
                  f"{s['silence_gaps_ms']['max']!s:>8} {s['harness_lateness']['p99_ms']!s:>13} {per_call:>31}  "
                  f"{s['verdict']}", flush=True)
            if runtime_cpu and call_seconds:
                print(f"{'':>6} -> one core would hold about {1000 / (1000 * runtime_cpu / call_seconds):.0f} "
                      "such calls in the runtime alone (CPU-bound estimate)", flush=True)


if __name__ == "__main__":
    main()
