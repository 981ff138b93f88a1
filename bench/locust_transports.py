"""How many paced calls one gevent-patched process (a Locust process) holds at p99 send lateness <= 5 ms, by
transport, side by side in one run.

Locust runs its users on gevent and monkey-patches the process; the harness's call engine is asyncio and, under
Locust, runs on an asyncio loop in a real OS thread beside gevent (``harness/load/bridge.py``). This bench puts the
alternatives side by side, each doing the same per-call work in a process patched the way Locust patches it:

- ``asyncio-thread``: the harness's design. An asyncio loop (gevent's original epoll selector) in a real OS thread
  (gevent's original ``start_new_thread``) runs ``websockets.asyncio.client`` callers, as
  ``bench/caller_capacity.py``'s baseline does; the main greenlet waits on the result with the gevent hub kept alive
  (``bridge.Hub``);
- ``websockets-sync-gevent``: ``websockets.sync.client.connect`` per call in a greenlet (patched sockets), which
  paces its frames with ``gevent.sleep`` on the absolute grid, and a reader greenlet per call;
- ``websocket-client-gevent``: the same shape with ``websocket.create_connection`` (only when the ``websocket-client``
  package is installed).

Per call: Twilio's ``connected`` and ``start`` messages, then a ``media`` JSON message carrying a 20 ms silence frame
every 20 ms on an absolute grid, and every frame the agent echoes back is read, parsed and base64-decoded. Lateness is
each frame's send time minus its grid time, recorded only in a window that opens once every call is connected and
closes before any hangs up (as in ``bench/caller_capacity.py``); "caller cores" is the CPU the process used per second
in that window. In every variant a trivial greenlet ticks every 0.1 s on the main thread, standing in for Locust's own.

Each level of each variant runs in a fresh process (``python -m bench.locust_transports --child ...``) that patches
itself with gevent first thing, as Locust does, and pins itself to CPU 0; the byte-level echo agent of
``bench/caller_capacity.py`` runs in a process of its own on CPU 1. Every child is bounded in time and killed by its
PID when it overruns. A level is "ok" when every call connected, none dropped in the window, echoes were read and
p99 <= 5 ms; a variant's capacity is the highest level it held with every lower level held too.

Run: ``.venv/bin/python -m bench.locust_transports`` (``--levels 50,100,200,300``, ``--hold 10``, ``--variants``;
``--quick`` for a smoke check). Prints a table, each variant's capacity and its ratio to ``asyncio-thread``, measured
side by side in this run; machines are noisy, so compare, don't quote.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and "--child" in sys.argv:  # a level's process: patched before anything else is imported
    from gevent import monkey

    monkey.patch_all()  # first thing, as Locust does

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import multiprocessing
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.caller_capacity import _cpu_now, _echo_server, _pin
from harness.lateness import LatenessHistogram
from harness.voice import SILENCE_FRAME_B64

GOAL_MS = 5.0
CALLER_CPU = 0
FRAME_S = 0.020
REPO = Path(__file__).resolve().parents[1]
#: calls connect in batches of this many, with a short pause between batches (as bench/caller_capacity.py does)
BATCH = 50
#: how long a level waits for its calls to connect before it measures what it has
CONNECT_S = 30.0
#: the window opens this long after the last call connected
SETTLE_S = 0.5
#: how long the calls get to hang up once the window has closed
STOP_S = 15.0
#: on top of connect + settle + hold + stop: the child's imports and start-up
CHILD_SLACK_S = 30.0
TICK_S = 0.1
ASYNCIO_THREAD = "asyncio-thread"
WEBSOCKETS_SYNC = "websockets-sync-gevent"
WEBSOCKET_CLIENT = "websocket-client-gevent"
VARIANTS = (ASYNCIO_THREAD, WEBSOCKETS_SYNC, WEBSOCKET_CLIENT)


def available_variants() -> list[str]:
    """The variants this environment can run: websocket-client is optional (and never installed by the bench)."""
    return [v for v in VARIANTS if v != WEBSOCKET_CLIENT or importlib.util.find_spec("websocket") is not None]


def child_budget_s(hold: float) -> float:
    """The longest a child may run before the parent kills it."""
    return CONNECT_S + SETTLE_S + hold + STOP_S + CHILD_SLACK_S


# --- what every caller sends and reads ----------------------------------------------------------------------------


#: Twilio's compact JSON; the echo agent matches ``"event":"media"`` byte for byte (``json.dumps``'s default
#: ``": "`` would never be echoed)
_COMPACT = (",", ":")


def _hello(i: int) -> list[str]:
    return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}, separators=_COMPACT),
            json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{i}",
                        "start": {"streamSid": f"MZ{i}"}}, separators=_COMPACT)]


def _media(i: int, seq: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": f"MZ{i}",
                       "media": {"track": "inbound", "chunk": str(seq - 1), "timestamp": str((seq - 1) * 20),
                                 "payload": SILENCE_FRAME_B64}}, separators=_COMPACT)


@dataclass
class _Calls:
    """The state of one level's calls, shared by its callers (all on one loop, or all greenlets of one thread)."""

    calls: int
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
    connected: int = 0
    failed: int = 0
    dropped: int = 0  # calls that ended before they were told to hang up
    echoed: int = 0  # echoed frames read in the window
    measuring: bool = False
    stopping: bool = False
    cores: float | None = None
    first_error: str = ""

    def read(self, message: str | bytes) -> None:
        data = json.loads(message)
        base64.b64decode(data["media"]["payload"])
        if self.measuring:
            self.echoed += 1

    def sent(self, lateness_s: float) -> None:
        if self.measuring:
            self.lateness.record(lateness_s)

    def ended(self, was_connected: bool, error: BaseException | None) -> None:
        if not was_connected:
            self.failed += 1
        elif not self.stopping:
            self.dropped += 1
        if error is not None and not self.first_error:
            self.first_error = f"{type(error).__name__}: {error}"

    def report(self) -> dict[str, Any]:
        return {"calls": self.calls, "connected": self.connected, "failed": self.failed, "dropped": self.dropped,
                "echoed": self.echoed, "lateness": self.lateness.summary_ms(), "cores": self.cores,
                "error": self.first_error}


# --- asyncio-thread: the harness's design -------------------------------------------------------------------------


async def _asyncio_calls(url: str, calls: int, hold: float) -> _Calls:
    """``bench/caller_capacity.py``'s ``_baseline``, told when to hang up rather than timed."""
    from websockets.asyncio.client import connect

    state = _Calls(calls)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        connected = False
        try:
            async with connect(url, max_queue=None, open_timeout=CONNECT_S, proxy=None) as ws:
                for message in _hello(i):
                    await ws.send(message)

                async def drain() -> None:
                    async for message in ws:
                        state.read(message)

                reader = asyncio.create_task(drain())
                state.connected += 1
                connected = True
                next_at = loop.time()
                seq = 1
                while not state.stopping and not reader.done():
                    next_at += FRAME_S
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                    seq += 1
                    await ws.send(_media(i, seq))
                    state.sent(loop.time() - next_at)
                reader.cancel()
            state.ended(connected, None)
        except Exception as exc:
            state.ended(connected, exc)

    tasks = []
    for i in range(calls):
        tasks.append(asyncio.create_task(one(i)))
        if i % BATCH == BATCH - 1:
            await asyncio.sleep(0.05)
    deadline = loop.time() + CONNECT_S
    while state.connected + state.failed < calls and loop.time() < deadline:  # noqa: ASYNC110 (a poll is fine)
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE_S)
    state.measuring = True  # the steady state only: all calls up, none ending
    cpu, opened = _cpu_now(), time.monotonic()
    await asyncio.sleep(hold)
    state.measuring = False
    state.cores = (_cpu_now() - cpu) / (time.monotonic() - opened)
    state.stopping = True
    await asyncio.wait(tasks, timeout=STOP_S)
    return state


def _asyncio_thread(url: str, calls: int, hold: float) -> _Calls:
    import gevent.event

    from harness.load.bridge import Hub, original_selector, start_real_thread

    hub = Hub()
    done: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def body() -> None:
        loop = asyncio.SelectorEventLoop(original_selector())
        asyncio.set_event_loop(loop)
        try:
            state = loop.run_until_complete(_asyncio_calls(url, calls, hold))
        except BaseException as exc:
            hub.call_soon(done.set_exception, exc)
        else:
            hub.call_soon(done.set, state)
        finally:
            loop.close()

    start_real_thread(body)
    return done.get(timeout=CONNECT_S + SETTLE_S + hold + STOP_S + 5)


# --- blocking clients on greenlets --------------------------------------------------------------------------------


class _Socket(Protocol):
    def send(self, message: str) -> None: ...
    def recv(self) -> str | bytes: ...


@dataclass(frozen=True)
class _Client:
    """How one blocking client connects, and how it closes given its reader greenlet (None: never started)."""

    connect: Callable[[str], _Socket]
    close: Callable[[Any, Any], None]


def _websockets_sync() -> _Client:
    from websockets.sync.client import connect

    def close(ws: Any, reader: Any) -> None:
        ws.close()  # the reader's recv() then raises ConnectionClosed and it ends
        if reader is not None:
            reader.join(timeout=5)

    return _Client(lambda url: connect(url, max_queue=None, open_timeout=CONNECT_S, proxy=None), close)


def _websocket_client() -> _Client:
    import websocket

    def close(ws: Any, reader: Any) -> None:
        if reader is not None:
            reader.kill()  # a gevent socket serves one reading greenlet at a time, and close() reads the reply
        ws.close(timeout=2)

    return _Client(lambda url: websocket.create_connection(url, timeout=CONNECT_S), close)


def _gevent_calls(client: _Client, url: str, calls: int, hold: float) -> _Calls:
    import gevent

    state = _Calls(calls)

    def drain(ws: _Socket) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = ws.recv()
                if not message:
                    return
                state.read(message)

    def one(i: int) -> None:
        connected = False
        try:
            ws = client.connect(url)
            reader = None
            try:
                for message in _hello(i):
                    ws.send(message)
                reader = gevent.spawn(drain, ws)
                state.connected += 1
                connected = True
                next_at = time.monotonic()
                seq = 1
                while not state.stopping and not reader.dead:
                    next_at += FRAME_S
                    gevent.sleep(max(0.0, next_at - time.monotonic()))
                    seq += 1
                    ws.send(_media(i, seq))
                    state.sent(time.monotonic() - next_at)
            finally:
                client.close(ws, reader)
            state.ended(connected, None)
        except Exception as exc:
            state.ended(connected, exc)

    greenlets = []
    for i in range(calls):
        greenlets.append(gevent.spawn(one, i))
        if i % BATCH == BATCH - 1:
            gevent.sleep(0.05)
    deadline = time.monotonic() + CONNECT_S
    while state.connected + state.failed < calls and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gevent.sleep(SETTLE_S)
    state.measuring = True
    cpu, opened = _cpu_now(), time.monotonic()
    gevent.sleep(hold)
    state.measuring = False
    state.cores = (_cpu_now() - cpu) / (time.monotonic() - opened)
    state.stopping = True
    gevent.joinall(greenlets, timeout=STOP_S)
    return state


# --- one level, in a child process --------------------------------------------------------------------------------


def _tick() -> None:
    import gevent

    while True:
        gevent.sleep(TICK_S)


def child(variant: str, url: str, calls: int, hold: float) -> dict[str, Any]:
    """One level of one variant; run in a fresh gevent-patched process (``--child``)."""
    import gevent
    from gevent import monkey

    _pin(CALLER_CPU)
    patched = monkey.is_module_patched("socket") and monkey.is_module_patched("threading")
    ticker = gevent.spawn(_tick)  # Locust's own greenlets
    try:
        if variant == ASYNCIO_THREAD:
            state = _asyncio_thread(url, calls, hold)
        elif variant == WEBSOCKETS_SYNC:
            state = _gevent_calls(_websockets_sync(), url, calls, hold)
        elif variant == WEBSOCKET_CLIENT:
            state = _gevent_calls(_websocket_client(), url, calls, hold)
        else:
            raise ValueError(f"unknown variant {variant}")
    finally:
        ticker.kill()
    return {**state.report(), "patched": patched}


@dataclass
class Level:
    variant: str
    calls: int
    connected: int = 0
    failed: int = 0
    dropped: int = 0
    echoed: int = 0
    frames: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cores: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return (not self.error and self.connected == self.calls and not self.dropped and self.echoed > 0
                and self.p99_ms is not None and self.p99_ms <= GOAL_MS)


def run_level(variant: str, url: str, calls: int, hold: float) -> Level:
    """Run one level in a fresh process; kill it by PID when it overruns its budget."""
    level = Level(variant, calls)
    budget = child_budget_s(hold)
    argv = [sys.executable, "-m", "bench.locust_transports", "--child", variant, "--url", url,
            "--calls", str(calls), "--hold", str(hold)]
    process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        process.kill()  # our own child, by its PID
        out, err = process.communicate()
        level.error = f"no result within {budget:g} s: killed PID {process.pid}"
    lines = out.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        report = json.loads(lines[-1])
        lateness = report["lateness"]
        level.connected, level.failed = report["connected"], report["failed"]
        level.dropped, level.echoed, level.cores = report["dropped"], report["echoed"], report["cores"]
        level.frames = lateness["frames"]
        level.p50_ms, level.p99_ms, level.max_ms = lateness["p50_ms"], lateness["p99_ms"], lateness["max_ms"]
        if report["error"] and (level.failed or level.dropped):
            level.error = report["error"]
        if not report["patched"]:
            level.error = "the child process was not patched by gevent"
    elif not level.error:
        tail = " | ".join(err.strip().splitlines()[-3:])
        level.error = f"exit code {process.returncode}: {tail}"
    return level


@contextlib.contextmanager
def echo_agent() -> Iterator[str]:
    """The byte-level echo agent of bench/caller_capacity.py in a process of its own (pinned to CPU 1); its URL."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    agent = ctx.Process(target=_echo_server, args=(queue,), daemon=True)
    agent.start()
    try:
        yield f"ws://127.0.0.1:{queue.get(timeout=30)}/media"
    finally:
        agent.terminate()
        agent.join(5)
        if agent.is_alive():
            agent.kill()
            agent.join(5)


# --- the table ----------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


HEADER = (f"{'calls':>6} {'variant':<24} {'connected':>9} {'frames':>8} {'echoed':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'cores':>6}  verdict")


def row(level: Level) -> str:
    verdict = "error" if level.error else "ok" if level.ok else "over 5 ms"
    if not level.error and level.connected != level.calls:
        verdict = "not all connected"
    elif not level.error and level.dropped:
        verdict = f"{level.dropped} dropped"
    elif not level.error and not level.echoed:
        verdict = "no echo read"
    cores = "-" if level.cores is None else f"{level.cores:.2f}"
    return (f"{level.calls:>6} {level.variant:<24} {f'{level.connected}/{level.calls}':>9} {level.frames:>8} "
            f"{level.echoed:>8} {_ms(level.p50_ms):>8} {_ms(level.p99_ms):>8} {_ms(level.max_ms):>8} {cores:>6}  "
            f"{verdict}")


def capacities(levels: list[Level]) -> dict[str, int]:
    """Each variant's highest level held within the goal with every lower level held too (0: none)."""
    best: dict[str, int] = {}
    for variant in dict.fromkeys(level.variant for level in levels):
        best[variant] = 0
        for level in sorted((x for x in levels if x.variant == variant), key=lambda x: x.calls):
            if not level.ok:
                break
            best[variant] = level.calls
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="50,100,200,300", help="concurrent calls, comma-separated")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each level measures its calls")
    parser.add_argument("--variants", default=",".join(available_variants()))
    parser.add_argument("--quick", action="store_true", help="levels 20 and 50, 4 s hold: a smoke check")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.calls, args.hold)), flush=True)
        return
    if args.quick:
        args.levels, args.hold = "20,50", 4.0
    levels = sorted(int(x) for x in args.levels.split(","))
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in available_variants()]
    if unknown:
        parser.error(f"variant not available: {', '.join(unknown)}; choose from {', '.join(available_variants())}")
    if WEBSOCKET_CLIENT not in available_variants():
        print(f"{WEBSOCKET_CLIENT}: skipped, the websocket-client package is not installed")
    results: list[Level] = []
    with echo_agent() as url:
        print(f"send lateness in the measured window ({args.hold:g} s, all calls connected, none ending); "
              "frames: sent in the window; echoed: read back in it;\ncores: the caller process's CPU per second in "
              "the window; each level a fresh gevent-patched process on CPU 0, the echo agent on CPU 1\n")
        print(HEADER, flush=True)
        for calls in levels:
            for variant in variants:
                level = run_level(variant, url, calls, args.hold)
                results.append(level)
                print(row(level), flush=True)
                if level.error:
                    print(f"       {level.error}", flush=True)
    best = capacities(results)
    print(f"\ncapacity (most calls at p99 send lateness <= {GOAL_MS:g} ms, every lower level held too; levels tried: "
          f"{','.join(map(str, levels))}):")
    base = best.get(ASYNCIO_THREAD)
    for variant, count in best.items():
        ratio = "" if base is None else f"  ratio to {ASYNCIO_THREAD}: " + (f"{count / base:.2f}" if base else "-")
        print(f"  {variant:<24} {count:>5}{ratio}")
    print("measured side by side in this run on a shared machine: compare, don't quote")


if __name__ == "__main__":
    main()
