"""``voicechaos run``: the composition root of a run.

It validates the target, starts the embedded stack when asked, places the calls at the scenario's arrival rate (never
more than its concurrency), records every event as it happens, and ends with ``summary.json`` and a console table.
Every run is bounded: ``limits.duration`` cancels whatever is still going, and each call has its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, TextIO

import aiohttp

from harness.caller import Call, CallEnvironment, Dial
from harness.clock import MonotonicClock
from harness.eventlog import EventLog
from harness.pacer import Pacer
from harness.records import CallRecord
from harness.safety import check_target
from harness.scenario import Scenario
from harness.stack import EmbeddedStack, StackEndpoints
from harness.summary import percentile, summarize
from harness.voice import Voice

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_USAGE, EXIT_STACK = 0, 1, 2, 3, 4


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    calls: list[CallRecord]

    @property
    def exit_code(self) -> int:
        verdict = self.summary["verdict"]
        return {"pass": EXIT_PASS, "invalid": EXIT_INVALID}.get(verdict, EXIT_FAIL)


def new_run_dir(base: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{stamp}-{name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def resolve_dial(scenario: Scenario, endpoints: StackEndpoints | None, *, allow_remote: bool) -> Dial:
    callers = scenario.callers
    target = scenario.target
    if target.embedded is not None:
        assert endpoints is not None
        return Dial(webhook_url=endpoints.webhook_url, auth_token=endpoints.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number)
    if target.webhook is not None:
        check_target(target.webhook.url, allow_remote=allow_remote, what="target.webhook.url")
        return Dial(webhook_url=target.webhook.url, auth_token=target.webhook.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number)
    assert target.websocket is not None
    check_target(target.websocket.url, allow_remote=allow_remote, what="target.websocket.url")
    return Dial(websocket_url=target.websocket.url, parameters=dict(target.websocket.parameters),
                from_number=callers.from_number, to_number=callers.to_number)


class Progress:
    """One status line: rewritten in place on a terminal, printed every few seconds otherwise (CI logs).

    Counts are kept as calls finish, so a line costs the same after ten calls or a hundred thousand.
    """

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0
        self.finished = 0
        self.completed = 0
        # the last few thousand replies: live, and cheap enough for the event loop (the summary has them all)
        self._latencies: deque[float] = deque(maxlen=2000)

    def call_finished(self, record: CallRecord) -> None:
        self.finished += 1
        self.completed += str(record.outcome) == "completed"
        self._latencies.extend(t.response_latency_ms for t in record.turns
                               if t.kind == "reply" and t.response_latency_ms is not None)

    def show(self, active: int, pacer: Pacer, final: bool = False) -> None:
        now = time.monotonic()
        if not final and not self.tty and now - self._last_print < 5.0:
            return
        self._last_print = now
        lateness = pacer.lateness.percentile(99)
        late = f"{lateness * 1000:.1f} ms" if lateness is not None else "-"
        latency = f"{percentile(list(self._latencies), 95):.0f} ms" if self._latencies else "-"
        line = (f"[{now - self.started:6.1f}s] calls {self.finished}/{self.total} done ({self.completed} completed, "
                f"{self.finished - self.completed} not), {active} active | recent response latency p95 {latency} | "
                f"harness lateness p99 {late}")
        if self.tty:
            self.out.write("\r" + line.ljust(110) + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


async def run_scenario(scenario: Scenario, scenario_path: Path, *, runs_dir: Path, allow_remote: bool = False,
                       out: TextIO | None = None, max_calls: int | None = None) -> RunResult:
    out = out or sys.stdout
    cpu_start = time.process_time()
    # an unsafe target is refused before anything is created or started
    dial = None if scenario.target.embedded is not None else resolve_dial(scenario, None, allow_remote=allow_remote)
    run_dir = new_run_dir(runs_dir, scenario.name)
    shutil.copy(scenario_path, run_dir / "scenario.yaml")
    events = EventLog(run_dir / "events.jsonl")
    clock = MonotonicClock()
    rng = Random(scenario.seed)
    stack: EmbeddedStack | None = None
    endpoints: StackEndpoints | None = None
    calls_total = min(scenario.callers.count, max_calls or scenario.callers.count)
    events.emit("run_started", {"scenario": scenario.name, "run_dir": str(run_dir), "calls": calls_total,
                                "config": scenario.model_dump(mode="json")})
    out.write(f"voicechaos: run {scenario.name!r} -> {run_dir}\n")
    done: list[CallRecord] = []
    interrupted = ""
    pacer = Pacer(clock)
    try:
        if scenario.target.embedded is not None:
            stack = EmbeddedStack(scenario.target.embedded, scenario_dir=scenario_path.parent, run_dir=run_dir,
                                  seed=scenario.seed)
            out.write("voicechaos: starting the embedded stack (fake providers, reference runtime)...\n")
            endpoints = await stack.start()
            events.emit("stack_started", {"runtime_url": endpoints.runtime_url, "providers": endpoints.providers})
            out.write(f"voicechaos: runtime at {endpoints.runtime_url}, providers "
                      f"{', '.join(f'{k} {v}' for k, v in endpoints.providers.items())}\n")
            dial = resolve_dial(scenario, endpoints, allow_remote=allow_remote)
        assert dial is not None
        interrupted = await _place_calls(scenario, dial, calls_total, clock, pacer, rng, events, done, out)
    finally:
        stack_cpu: dict[str, float] = {}
        if stack is not None:
            stack_cpu = stack.cpu_seconds()
            await stack.stop()
            events.emit("stack_stopped", {"cpu_s": stack_cpu})
        lateness = pacer.lateness.summary_ms()
        summary = summarize([c.to_json() for c in done], lateness, scenario.targets)
        summary["scenario"] = scenario.name
        summary["run_dir"] = str(run_dir)
        summary["calls_planned"] = calls_total
        # CPU each process used: on a shared machine, this is what tells a slow agent from a starved one
        summary["cpu_s"] = {"harness": round(time.process_time() - cpu_start, 2), **stack_cpu}
        if interrupted:
            summary["interrupted"] = interrupted
        summary["config"] = scenario.model_dump(mode="json")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        events.emit("run_finished", {"verdict": summary["verdict"], "interrupted": interrupted or None})
        events.close()
    print_console_report(summary, done, out)
    return RunResult(run_dir=run_dir, summary=summary, calls=done)


async def _place_calls(scenario: Scenario, dial: Dial, calls_total: int, clock: MonotonicClock, pacer: Pacer,
                       rng: Random, events: EventLog, done: list[CallRecord], out: TextIO) -> str:
    """Start calls at the arrival rate, bounded by concurrency and the run's duration. Returns why it stopped early
    ('' when every call ran)."""
    callers = scenario.callers
    concurrency = asyncio.Semaphore(callers.concurrency or calls_total)
    progress = Progress(out, calls_total)
    stop_reason = ""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        nonlocal stop_reason
        stop_reason = stop_reason or "interrupted by the user (Ctrl-C / SIGTERM)"
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        voice = Voice()
        voice.prepare(scenario.script)
        env = CallEnvironment(clock=clock, pacer=pacer, voice=voice, http=http, rng=rng, emit=events.emit)
        pacer_task = asyncio.create_task(pacer.run())
        tasks: set[asyncio.Task[CallRecord]] = set()
        active: set[Call] = set()

        async def one_call(call_id: int) -> CallRecord:
            async with concurrency:
                call = Call(env, call_id, scenario.script, scenario.limits, dial)
                active.add(call)
                try:
                    record = await call.run()
                finally:
                    active.discard(call)
                    done.append(call.record)
                    progress.call_finished(call.record)
                return record

        async def launcher() -> None:
            start = clock.now()
            for call_id in range(calls_total):
                due = start + call_id / callers.arrival_rate
                delay = due - clock.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.add(asyncio.create_task(one_call(call_id)))
            if tasks:
                await asyncio.wait(set(tasks))

        async def reporter() -> None:
            while True:
                progress.show(pacer.active, pacer)
                await asyncio.sleep(1.0)

        report_task = asyncio.create_task(reporter())
        launch = asyncio.create_task(launcher())
        stop_wait = asyncio.create_task(stopping.wait())
        try:
            finished, _ = await asyncio.wait({launch, stop_wait}, timeout=scenario.limits.duration,
                                             return_when=asyncio.FIRST_COMPLETED)
            if launch not in finished:
                stop_reason = stop_reason or f"the run reached limits.duration ({scenario.limits.duration:g} s)"
                launch.cancel()
                for call in active:
                    call.stop_reason = stop_reason
                for task in tasks:
                    task.cancel()
                # cancelled calls still record themselves; give them a moment to do so
                await asyncio.wait({launch, *tasks}, timeout=10.0)
            elif launch.exception() is not None:
                raise launch.exception()  # type: ignore[misc]
        finally:
            stop_wait.cancel()
            report_task.cancel()
            pacer_task.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            progress.show(pacer.active, pacer, final=True)
    if stop_reason:
        out.write(f"voicechaos: stopped early: {stop_reason}\n")
    return stop_reason


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}" if unit else f"{value:g}"
    return f"{value}{unit}"


def print_console_report(summary: dict[str, Any], calls: list[CallRecord], out: TextIO, max_rows: int = 40) -> None:
    out.write("\nPer call\n")
    header = f"{'call':>5} {'outcome':<18} {'turns':>5} {'latency p50':>12} {'max gap':>9} {'heard':>6}  reason\n"
    out.write(header)
    for call in sorted(calls, key=lambda c: c.call_id)[:max_rows]:
        latencies = [t.response_latency_ms for t in call.turns if t.kind == "reply" and t.response_latency_ms]
        p50 = sorted(latencies)[len(latencies) // 2] if latencies else None
        max_gap = max((t.max_gap_ms for t in call.turns), default=None)
        heard = sum(len(t.heard) for t in call.turns)
        out.write(f"{call.call_id:>5} {call.outcome!s:<18} {len(call.turns):>5} {_fmt(p50, ' ms'):>12} "
                  f"{_fmt(max_gap, ' ms'):>9} {heard:>6}  {call.reason[:110]}\n")
    if len(calls) > max_rows:
        out.write(f"  ... {len(calls) - max_rows} more calls in events.jsonl\n")
    latency = summary["response_latency_ms"]
    out.write(f"\nResponse latency (end of caller speech -> first audible agent audio), {latency['count']} replies: "
              f"p50 {_fmt(latency['p50'], ' ms')}, p95 {_fmt(latency['p95'], ' ms')}, "
              f"p99 {_fmt(latency['p99'], ' ms')}, max {_fmt(latency['max'], ' ms')}\n")
    greeting = summary["greeting_latency_ms"]
    out.write(f"Greeting latency (stream start -> first audio): p50 {_fmt(greeting['p50'], ' ms')}, "
              f"p95 {_fmt(greeting['p95'], ' ms')}\n")
    gaps = summary["silence_gaps_ms"]
    out.write(f"Silence gaps inside agent turns: {gaps['count']} gaps, p95 {_fmt(gaps['p95'], ' ms')}, "
              f"max {_fmt(gaps['max'], ' ms')}\n")
    lateness = summary["harness_lateness"]
    out.write(f"Harness send lateness on the 20 ms grid: p50 {_fmt(lateness['p50_ms'], ' ms')}, "
              f"p99 {_fmt(lateness['p99_ms'], ' ms')}, max {_fmt(lateness['max_ms'], ' ms')} "
              f"over {lateness['frames']} frames\n")
    out.write("\nTargets\n")
    for row in summary["targets"]:
        out.write(f"  {row['verdict'].upper():<13} {row['metric']:<26} measured {_fmt(row['measured']):>8}  "
                  f"target {row['target']:<12} {row['note']}\n")
    out.write(f"\nVerdict: {summary['verdict'].upper()}: {summary['verdict_reason']}\n")
    out.write(f"Run folder: {summary['run_dir']} (events.jsonl, summary.json, stack/ logs)\n")
    out.flush()
