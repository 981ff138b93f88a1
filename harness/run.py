"""``voicechaos run``: the composition root of a run.

It validates the target, starts the embedded stack when asked, places the calls at the scenario's arrival rate (never
more than its concurrency), records every event as it happens, and ends with ``summary.json`` and a console table.
Every run is bounded: ``limits.duration`` cancels whatever is still going, and each call has its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, TextIO

import aiohttp

from harness.caller import Call, CallEnvironment, Dial, EventSink
from harness.clock import MonotonicClock
from harness.gcpause import GcWatch
from harness.pacer import Pacer
from harness.records import CallRecord
from harness.scenario import Scenario
from harness.session import RunSession
from harness.summary import percentile
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
    calls_total = min(scenario.callers.count, max_calls or scenario.callers.count)
    session = RunSession(scenario, scenario_path, runs_dir=runs_dir, allow_remote=allow_remote, out=out,
                         calls_planned=calls_total)
    clock = session.clock
    rng = Random(scenario.seed)
    done: list[CallRecord] = []
    interrupted = ""
    pacer = Pacer(clock)
    gc_watch = GcWatch()
    finished = False
    try:
        dials = await session.open()
        session.start_load()
        with gc_watch:
            interrupted = await _place_calls(scenario, dials, calls_total, clock, pacer, rng, session.emit, done, out)
        finished = True
    finally:
        # whatever happened, what was recorded is written (a failed start still leaves its summary.json)
        lateness = {**pacer.lateness.summary_ms(), "gc": gc_watch.summary()}
        summary, report_line = await session.close([c.to_json() for c in done], lateness, interrupted=interrupted,
                                                   report=finished)
    assert session.run_dir is not None
    print_console_report(summary, done, out)
    out.write(report_line)
    out.flush()
    return RunResult(run_dir=session.run_dir, summary=summary, calls=done)


async def _place_calls(scenario: Scenario, dials: list[Dial], calls_total: int, clock: MonotonicClock, pacer: Pacer,
                       rng: Random, emit: EventSink, done: list[CallRecord], out: TextIO) -> str:
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
        env = CallEnvironment(clock=clock, pacer=pacer, voice=voice, http=http, rng=rng, emit=emit)
        pacer_task = asyncio.create_task(pacer.run())
        tasks: set[asyncio.Task[CallRecord]] = set()
        active: set[Call] = set()

        async def one_call(call_id: int) -> CallRecord:
            async with concurrency:
                dial = dials[callers.group_of(call_id)]
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


def _print_faults(faults: list[dict[str, Any]], out: TextIO) -> None:
    if not faults:
        return
    out.write("\nFaults (seconds after the load started) and what they did\n")
    for item in faults:
        effect = item.get("effect")
        if "index" in item:
            when = (f"applied {_fmt(item.get('applied_at_s'), ' s')} -> removed {_fmt(item.get('removed_at_s'), ' s')}"
                    f" ({item.get('removed_because') or 'still applied'})")
            if item.get("error"):
                when = f"FAILED to apply at {_fmt(item.get('applied_at_s'), ' s')}: {item['error']}"
            if item.get("rollback_error"):
                when += f"; ROLLBACK FAILED: {item['rollback_error']}"
            out.write(f"  {item['label']:<28} {when}\n")
        else:
            out.write(f"  {item['label']:<28}\n")
        if effect:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(effect["outcomes_during"].items())) or "none"
            latency = effect["response_latency_ms"]
            out.write(f"  {'':<28} calls in progress {effect['calls_during']} ({outcomes}); {effect['turns']} turns, "
                      f"response latency p95 {_fmt(latency['p95'], ' ms')}, statuses "
                      f"{', '.join(f'{k} {v}' for k, v in sorted(effect['statuses'].items())) or '-'}\n")
            if "calls_started_after" in effect:
                after = ", ".join(f"{k} {v}" for k, v in sorted(effect["outcomes_after"].items())) or "none"
                out.write(f"  {'':<28} calls started after it: {effect['calls_started_after']} ({after})\n")
        counted = item.get("counters_delta") or {}
        if counted:
            shown = sorted(counted.items(), key=lambda kv: -abs(kv[1]))[:6]
            out.write(f"  {'':<28} counted meanwhile: "
                      f"{'; '.join(f'{k} +{v:g}' for k, v in shown)}{' ...' if len(counted) > 6 else ''}\n")


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
    _print_faults(summary.get("faults") or [], out)
    recordings = summary.get("recordings")
    if recordings:
        out.write(f"Recordings in object storage: {recordings['arrived']} of {recordings['calls_with_media']} calls "
                  f"({recordings['missing']} missing)"
                  f"{'; listing failed: ' + recordings['listing_error'] if recordings['listing_error'] else ''}\n")
    out.write("\nTargets\n")
    for row in summary["targets"]:
        out.write(f"  {row['verdict'].upper():<13} {row['metric']:<26} measured {_fmt(row['measured']):>8}  "
                  f"target {row['target']:<12} {row['note']}\n")
    out.write(f"\nVerdict: {summary['verdict'].upper()}: {summary['verdict_reason']}\n")
    out.write(f"Run folder: {summary['run_dir']} (events.jsonl, summary.json, junit.xml, stack/ logs)\n")
    out.flush()
