"""How many paced calls the Locust engine holds at p99 send lateness <= 5 ms, beside the harness's engine alone.

Three ways to place the same calls, run side by side at each level of concurrent calls:

- ``harness``: ``voicechaos run`` (one asyncio process, no Locust);
- ``locust``: ``voicechaos soak`` with one local Locust process (gevent main thread + the call engine's asyncio loop
  in an OS thread beside it);
- ``locust-2w``: ``voicechaos soak --workers 2`` (a master and two workers, the calls split over the two).

All three run the *same* scenario file: a ramp to N calls over ``--ramp`` seconds, then a hold; every call pauses
(sending its 50 frames a second and playing what comes back) and hangs up. For ``run`` the ramp is the arrival rate;
for Locust it is the scenario's ``load: {shape: ramp}``. Each call lasts a little longer than ramp + hold, so no
caller ends its call while the shape still holds, each load process may place only its share of the calls
(``--max-calls``: no redial while a master ramps its workers down), and the soak's drain lets every call finish:
both engines place N calls of the same length, and ``frames`` should agree. The lateness compared is the one each
run's ``summary.json`` judges the run by (``harness_lateness``: every frame of the run, ramp and hang-ups included);
for the workers, the merged figure and each worker's. A level is "ok" when the run's p99 (and, with workers, every
worker's p99) is <= 5 ms.

The target is the byte-level echo agent of :mod:`bench.caller_capacity` (every media frame sent back, so callers also
receive and play 50 messages a second) in a process of its own. By default every caller-side process (the launcher,
Locust's processes, ``voicechaos run``) is pinned to CPU 0 and the agent to CPU 1, so the capacities are per core and
the agent never competes with the callers; ``--no-pin`` lets the OS place them (for machines with more cores, where
the workers should spread). "caller cores" is the CPU all caller-side processes used per second while all N calls
were up (sampled from /proc), so Locust's own overhead shows beside the lateness.

Every run is bounded in time; each process started (and every process it started, found in /proc) is ended by its
PID. Run folders go to a temporary folder under /tmp, removed at the end (``--keep`` keeps it).

Run: ``.venv/bin/python -m bench.locust_capacity`` (``--levels 50,100,200,300``; ``--quick`` for a smoke check).
Prints a table and the ratio of the capacities measured side by side in this run; machines are noisy, so compare,
don't quote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.caller_capacity import _EchoAgent, _pin

GOAL_MS = 5.0
CALLER_CPU = 0
AGENT_CPU = 1
REPO = Path(__file__).resolve().parents[1]
#: each call outlives ramp + hold by this much: Locust's shape has ended (no redial) before any call ends by itself
CALL_MARGIN_S = 2.0
#: the steady-state CPU window opens this long after the last call connected, and closes this long before the
#: first call could end
WINDOW_SETTLE_S = 1.0
WINDOW_GUARD_S = 4.0
#: on top of the planned run: process start-up (Locust's imports), the drain, the summary and report.html
RUN_SLACK_S = 120.0
POLL_S = 0.5


@dataclass(frozen=True)
class Variant:
    name: str
    workers: int | None  # None: `voicechaos run`; 0: one local Locust process; n: a master and n workers

    def argv(self, scenario: Path, runs_dir: Path, calls: int) -> list[str]:
        cli = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())"]
        if self.workers is None:
            return [*cli, "run", str(scenario), "--runs-dir", str(runs_dir)]
        # Each load process may place only its share of the plan's calls (Locust splits the users evenly). The
        # master ramps its workers down at the spawn rate, so without this a caller whose call ended before its
        # stop arrived would call again (measured: 106 calls for 100 users).
        share = -(-calls // self.workers) if self.workers else calls
        return [*cli, "soak", str(scenario), "--runs-dir", str(runs_dir), "--workers", str(self.workers),
                "--max-calls", str(share)]


VARIANTS = (Variant("harness", None), Variant("locust", 0), Variant("locust-2w", 2))


@dataclass(frozen=True)
class Plan:
    """One level: N calls ramped up over ``ramp_s`` and held ``hold_s`` at N."""

    calls: int
    ramp_s: float
    hold_s: float

    @property
    def call_s(self) -> float:
        return self.ramp_s + self.hold_s + CALL_MARGIN_S

    @property
    def run_s(self) -> float:
        """When the last call ends (it starts at the end of the ramp)."""
        return self.ramp_s + self.call_s

    @property
    def window_s(self) -> float:
        """The steady-state window: after the last call connected, before the first call can end."""
        return max(1.0, self.call_s - self.ramp_s - WINDOW_SETTLE_S - WINDOW_GUARD_S)

    def scenario(self, url: str) -> dict[str, Any]:
        return {
            "name": f"locust-capacity-{self.calls}",
            "description": "bench/locust_capacity.py: calls held against the echo agent",
            "target": {"websocket": {"url": url}},
            "callers": {"count": self.calls, "concurrency": self.calls,
                        "arrival_rate": min(1000.0, self.calls / self.ramp_s)},
            "load": {"shape": "ramp", "users": self.calls, "ramp": self.ramp_s, "hold": self.hold_s},
            "script": [{"pause": self.call_s}, "hang_up"],
            "limits": {"duration": self.run_s + 60, "call_timeout": self.call_s + 30},
        }


@dataclass
class Result:
    variant: str
    calls: int
    exit_code: int | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    frames: int | None = None
    worker_p99_ms: dict[str, float | None] = field(default_factory=dict)
    completed: int = 0
    total: int = 0
    cores: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        """p99 within the goal: the run's, and every worker's."""
        figures = [self.p99_ms, *self.worker_p99_ms.values()]
        return not self.error and all(p is not None and p <= GOAL_MS for p in figures)

    def read_summary(self, summary: dict[str, Any]) -> None:
        lateness = summary.get("harness_lateness") or {}
        self.p99_ms, self.max_ms, self.frames = lateness.get("p99_ms"), lateness.get("max_ms"), lateness.get("frames")
        self.worker_p99_ms = {name: figures.get("p99_ms") for name, figures in (lateness.get("workers") or {}).items()}
        calls = summary.get("calls") or {}
        self.total = int(calls.get("total") or 0)
        self.completed = int((calls.get("outcomes") or {}).get("completed", 0))


# --- processes ----------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, start time in clock ticks, CPU seconds) of a process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessTree:
    """A process and everything it starts, seen by scanning /proc: the CPU they use, and their PIDs to end.

    A process is known by (pid, start time), so a PID reused after the bench's process ended is never signalled.
    Locust's workers live in sessions of their own, so a process group would not reach them: this follows ppid."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: set[tuple[int, int]] = set()

    def scan(self) -> dict[int, float]:
        """The live descendants (root included) and their CPU seconds so far."""
        parents: dict[int, int] = {}
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat is not None:
                    parents[int(entry)] = stat[0]
                    stats[int(entry)] = stat[1], stat[2]
        tree = {self.root} if self.root in stats else set()
        grew = True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        self.seen.update((pid, stats[pid][0]) for pid in tree)
        return {pid: stats[pid][1] for pid in tree}

    def end(self, grace_s: float = 5.0) -> list[int]:
        """SIGTERM then SIGKILL every process of the tree still running; the PIDs that had to be ended."""
        self.scan()
        alive = [pid for pid, started in self.seen if (_stat(pid) or (0, -1))[1] == started]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(pid, started) for pid, started in self.seen):
            time.sleep(0.1)
        for pid, started in self.seen:
            if _alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return alive


def _alive(pid: int, started: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == started


class CallCounter:
    """Counts call_connected / call_ended in a run's events.jsonl as it grows (Locust's arrive in batches)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.path: Path | None = None
        self.offset = 0
        self.partial = b""
        self.connected = 0
        self.ended = 0

    def poll(self) -> None:
        if self.path is None:
            found = sorted(self.runs_dir.glob("*/events.jsonl"))
            if not found:
                return
            self.path = found[0]
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self.connected += b'"event":"call_connected"' in line[:40]
            self.ended += b'"event":"call_ended"' in line[:40]


def _pin_caller() -> None:
    _pin(CALLER_CPU)


def run_variant(variant: Variant, plan: Plan, scenario: Path, workdir: Path, *, pin: bool) -> Result:
    result = Result(variant.name, plan.calls)
    runs_dir = workdir / f"{plan.calls}-{variant.name}"
    runs_dir.mkdir()
    log_path = runs_dir / "output.log"
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(variant.argv(scenario, runs_dir, plan.calls), cwd=REPO, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_pin_caller if pin else None)
    tree = ProcessTree(process.pid)
    counter = CallCounter(runs_dir)
    deadline = time.monotonic() + plan.run_s + RUN_SLACK_S
    steady_from: float | None = None  # when the steady-state window opens: every call is up
    start: tuple[float, dict[int, float]] | None = None  # (opened at, CPU seconds per pid then)
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                result.error = f"no end within {plan.run_s + RUN_SLACK_S:g} s"
                process.send_signal(signal.SIGTERM)  # the launcher ends the run as on Ctrl-C
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
                break
            cpu = tree.scan()
            counter.poll()
            now = time.monotonic()
            if steady_from is None and counter.connected >= plan.calls:
                steady_from = now + WINDOW_SETTLE_S
            if steady_from is not None and start is None and now >= steady_from:
                start = (now, cpu)
            # a call already over would make the window no longer steady: then no figure rather than a wrong one
            if start is not None and result.cores is None and now >= start[0] + plan.window_s and not counter.ended:
                used = sum(seconds - start[1].get(pid, 0.0) for pid, seconds in cpu.items())
                result.cores = used / (now - start[0])
            time.sleep(POLL_S)
    finally:
        left = tree.end()
        if process.poll() is None:
            process.kill()
        process.wait()
    result.exit_code = process.returncode
    if left and not result.error:
        result.error = f"processes left running after the run, ended by PID: {left}"
    summaries = sorted(runs_dir.glob("*/summary.json"))
    if summaries:
        result.read_summary(json.loads(summaries[0].read_text()))
    elif not result.error:
        result.error = "no summary.json"
    if result.exit_code not in (0, 1, 2) and not result.error:
        result.error = f"exit code {result.exit_code}"
    if result.error:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        result.error += "\n      " + "\n      ".join(tail)
    return result


# --- the agent ----------------------------------------------------------------------------------------------------


def _agent(port_queue: multiprocessing.Queue, pin: bool) -> None:  # type: ignore[type-arg]
    import asyncio

    if pin:
        _pin(AGENT_CPU)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_EchoAgent, "127.0.0.1", 0, backlog=4096)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


# --- the table ----------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def row(result: Result) -> str:
    workers = " ".join(f"{_ms(p)}" for _, p in sorted(result.worker_p99_ms.items())) or "-"
    verdict = "error" if result.error else "ok" if result.ok else "over 5 ms"
    cores = "-" if result.cores is None else f"{result.cores:.2f}"
    per_pair = "-" if result.cores is None else f"{result.cores / (result.calls / 0.020) * 1e6:.0f}"
    return (f"{result.calls:>6} {result.variant:<10} {_ms(result.p99_ms):>8} {_ms(result.max_ms):>8} "
            f"{workers:>13} {result.frames or 0:>9} {f'{result.completed}/{result.total}':>9} {verdict:<9} "
            f"{cores:>7} {per_pair:>9} {'-' if result.exit_code is None else result.exit_code:>4}")


HEADER = (f"{'calls':>6} {'variant':<10} {'p99 ms':>8} {'max ms':>8} {'worker p99s':>13} {'frames':>9} "
          f"{'completed':>9} {'verdict':<9} {'cores':>7} {'µs/pair':>9} {'exit':>4}")


def capacities(results: list[Result]) -> dict[str, int]:
    """The largest level each variant held within the goal (0: none)."""
    best: dict[str, int] = {}
    for result in results:
        best.setdefault(result.variant, 0)
        if result.ok:
            best[result.variant] = max(best[result.variant], result.calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="50,100,200,300", help="concurrent calls, comma-separated")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to ramp up to the level")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the level is held")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--quick", action="store_true", help="one small level, short: a smoke check")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the OS place the processes (default: callers on CPU 0, the agent on CPU 1)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (under /tmp)")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.ramp, args.hold = "20", 2.0, 6.0
    levels = [int(x) for x in args.levels.split(",")]
    by_name = {v.name: v for v in VARIANTS}
    unknown = [name for name in args.variants.split(",") if name not in by_name]
    if unknown:
        parser.error(f"unknown variant {', '.join(unknown)}; choose from {', '.join(by_name)}")
    variants = [by_name[name] for name in args.variants.split(",")]
    # a SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so the processes of the run in progress are ended too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pin = args.pin and hasattr(os, "sched_setaffinity") and {CALLER_CPU, AGENT_CPU} <= os.sched_getaffinity(0)
    workdir = Path(tempfile.mkdtemp(prefix="locust-capacity-", dir="/tmp"))
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    agent = multiprocessing.Process(target=_agent, args=(queue, pin), daemon=True)
    agent.start()
    if pin:
        _pin(AGENT_CPU)  # this process only polls /proc: keep it off the callers' core
    results: list[Result] = []
    try:
        url = f"ws://127.0.0.1:{queue.get(timeout=20)}/media"
        print(f"harness send lateness over each whole run (summary.json); {args.ramp:g} s ramp, {args.hold:g} s "
              f"hold, calls of {Plan(0, args.ramp, args.hold).call_s:g} s; "
              + ("callers pinned to CPU 0, the echo agent to CPU 1" if pin else "no CPU pinning")
              + "\ncores: CPU of all caller-side processes per second with every call up; µs/pair: that per frame "
                "sent and received\n")
        print(HEADER, flush=True)
        for calls in levels:
            plan = Plan(calls, args.ramp, args.hold)
            scenario = workdir / f"scenario-{calls}.yaml"
            scenario.write_text(yaml.safe_dump(plan.scenario(url), sort_keys=False))
            for variant in variants:
                result = run_variant(variant, plan, scenario, workdir, pin=pin)
                results.append(result)
                print(row(result), flush=True)
                if result.error:
                    print(f"      {result.error}", flush=True)
        best = capacities(results)
        print(f"\nmost calls with p99 send lateness <= {GOAL_MS:g} ms (levels tried: {args.levels}): "
              + ", ".join(f"{name} {count}" for name, count in best.items()))
        alone = best.get("harness", 0)
        for name in ("locust", "locust-2w"):
            if name in best and "harness" in best:
                ratio = f"{best[name] / alone:.2f}" if alone else "- (the harness alone held no level)"
                print(f"capacity ratio {name} / harness alone: {ratio}")
        print("measured side by side in this run on a shared machine: compare, don't quote")
    finally:
        agent.terminate()
        agent.join(5)
        if agent.is_alive():
            agent.kill()
        if args.keep:
            print(f"run folders kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
