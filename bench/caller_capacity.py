"""How many paced calls one harness process holds at p99 send lateness <= 5 ms, beside a plain asyncio baseline.

Both variants phone the same trivial echo agent (a separate process that sends every media frame back, so callers
also receive and play 50 messages a second) and hold N concurrent calls for a few seconds; lateness is each frame's
write time minus its 20 ms grid time, recorded once every call is connected. The baseline is what one would write
first: ``websockets.asyncio.client.connect`` per call and a per-call ``asyncio.sleep`` loop that awaits ``send``.

Run: ``make bench`` (or ``.venv/bin/python -m bench.caller_capacity --levels 100,200,300``). Prints a table and the
ratio of the two capacities measured side by side in this run; machines are noisy, so compare, don't quote.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import time
from random import Random

import aiohttp

from harness.caller import Call, CallEnvironment, Dial
from harness.clock import MonotonicClock
from harness.lateness import LatenessHistogram
from harness.pacer import Pacer
from harness.scenario import HangUp, Limits, Pause
from harness.voice import SILENCE_FRAME_B64, Voice

GOAL_MS = 5.0


def _echo_server(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        try:
            await echo(ws)
        except ConnectionClosed:
            pass

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        stream_sid = ""
        async for message in ws:
            data = json.loads(message)
            if data.get("event") == "start":
                stream_sid = data["streamSid"]
            elif data.get("event") == "media":
                await ws.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                          "media": {"payload": data["media"]["payload"]}}))

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_queue=None) as server:
            port_queue.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


async def _voicechaos(url: str, calls: int, hold: float) -> LatenessHistogram:
    clock = MonotonicClock()
    pacer = Pacer(clock)
    async with aiohttp.ClientSession() as http:
        env = CallEnvironment(clock=clock, pacer=pacer, voice=Voice(), http=http, rng=Random(1),
                              emit=lambda name, fields: None)
        pacer_task = asyncio.create_task(pacer.run())
        limits = Limits(call_timeout=hold + 60)
        tasks = []
        for i in range(calls):
            call = Call(env, i, [Pause(seconds=hold), HangUp()], limits, Dial(websocket_url=url))
            tasks.append(asyncio.create_task(call.run()))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        while pacer.active < calls and not all(t.done() for t in tasks):  # noqa: ASYNC110 (a poll is fine here)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        pacer.lateness = LatenessHistogram()  # measure the steady state only
        records = await asyncio.gather(*tasks)
        pacer_task.cancel()
    failed = [r for r in records if str(r.outcome) != "completed"]
    if failed:
        print(f"  voicechaos: {len(failed)} calls did not complete: {failed[0].reason}")
    return pacer.lateness


async def _baseline(url: str, calls: int, hold: float) -> LatenessHistogram:
    from websockets.asyncio.client import connect

    lateness = LatenessHistogram()
    connected = 0
    measuring = asyncio.Event()

    async def one(i: int) -> None:
        nonlocal connected
        async with connect(url, max_queue=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{i}",
                                      "start": {"streamSid": f"MZ{i}"}}))

            async def drain() -> None:
                async for message in ws:
                    data = json.loads(message)
                    base64.b64decode(data["media"]["payload"])

            reader = asyncio.create_task(drain())
            connected += 1
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            end = next_at + hold
            seq = 1
            while next_at < end:
                next_at += 0.02
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                seq += 1
                await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": f"MZ{i}",
                                          "media": {"track": "inbound", "chunk": str(seq - 1),
                                                    "timestamp": str((seq - 1) * 20), "payload": SILENCE_FRAME_B64}}))
                if measuring.is_set():
                    lateness.record(loop.time() - next_at)
            reader.cancel()

    tasks = []
    for i in range(calls):
        tasks.append(asyncio.create_task(one(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    while connected < calls and not all(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    measuring.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100,200,300,400,500,600,700")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds each level holds its calls")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=_echo_server, args=(queue,), daemon=True)
    server.start()
    try:
        url = f"ws://127.0.0.1:{queue.get(timeout=20)}/media"
        best = {"voicechaos": 0, "baseline": 0}
        print(f"{'calls':>6} {'variant':<11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for calls in levels:
            for name, variant in (("voicechaos", _voicechaos), ("baseline", _baseline)):
                started = time.monotonic()
                hist = asyncio.run(variant(url, calls, args.hold))
                s = hist.summary_ms()
                ok = s["p99_ms"] is not None and s["p99_ms"] <= GOAL_MS
                if ok:
                    best[name] = max(best[name], calls)
                print(f"{calls:>6} {name:<11} {s['p50_ms']!s:>8} {s['p99_ms']!s:>8} {s['max_ms']!s:>8}"
                      f"  {'ok' if ok else 'over 5 ms'}  ({time.monotonic() - started:.0f} s)", flush=True)
        ratio = best["voicechaos"] / best["baseline"] if best["baseline"] else float("inf")
        print(f"\nmost calls at p99 send lateness <= {GOAL_MS:g} ms (levels tried: {args.levels}): "
              f"voicechaos {best['voicechaos']}, plain asyncio websockets {best['baseline']}, ratio {ratio:.2f}")
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
