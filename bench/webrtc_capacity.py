"""How many WebRTC calls one harness process holds at p99 send lateness <= 5 ms, beside Twilio calls in the same run.

The same harness :class:`~harness.caller.Call` places both kinds: over Twilio Media Streams (a websocket, μ-law
frames as JSON) and over WebRTC (aiortc: ICE and DTLS on loopback, Opus encoded and decoded, SRTP). Each level holds N
concurrent calls that pause (sending 50 frames a second, hearing 50 a second) and hang up; lateness is each frame's
hand-over time minus its 20 ms grid time, in a window that opens once every call is connected and closes before any
hangs up (the pacer's histogram, as ``voicechaos run`` judges a run by).

The far ends are echo agents in a process of their own, pinned to CPU 1: the byte-level websocket echo of
:mod:`bench.caller_capacity` for Twilio, and an aiortc peer that sends the caller's own track back for WebRTC (so a
WebRTC caller also decodes 50 Opus frames a second). Each level runs in a fresh process pinned to CPU 0, so the figures
are per core. Not measured here: when aiortc actually puts the frame on the wire after the hand-over (its encoder runs
in a thread pool); the pacer's lateness is what a late harness would add to the caller's timeline.

Run: ``.venv/bin/python -m bench.webrtc_capacity`` (``--twilio-levels 100,200,300 --webrtc-levels 10,20,30,50``;
``--quick`` for a smoke check). Prints a table and the ratio of the two capacities measured side by side in this run;
machines are noisy, so compare, don't quote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import time
from random import Random
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCSessionDescription

from bench.caller_capacity import _cpu_now, _cpu_seconds, _echo_server, _pin
from harness.caller import Call, CallEnvironment, Dial
from harness.clock import MonotonicClock
from harness.lateness import LatenessHistogram
from harness.pacer import Pacer
from harness.scenario import HangUp, Limits, Pause
from harness.voice import Voice
from harness.webrtc.loopback import gather_on_loopback_only, loopback_peer

GOAL_MS = 5.0
GOAL_WEBRTC = 50  # the aim: at least 50 concurrent WebRTC calls per process on 2 cores
_TAIL_S = 1.0


def _webrtc_echo_server(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """An aiortc answerer (HTTP offer/answer, loopback only) that sends each caller's track straight back."""
    _pin(1)
    peers: set[Any] = set()

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        pc = loopback_peer()
        peers.add(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            pc.addTrack(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                peers.discard(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        gather_on_loopback_only(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer", "pc_id": body.get("pc_id")})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/offer", offer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Future()

    asyncio.run(main())


async def _hold(dial: Dial, calls: int, hold: float) -> tuple[LatenessHistogram, float, int, str]:
    clock = MonotonicClock()
    pacer = Pacer(clock)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        env = CallEnvironment(clock=clock, pacer=pacer, voice=Voice(), http=http, rng=Random(1),
                              emit=lambda name, fields: None)
        pacer_task = asyncio.create_task(pacer.run())
        ramp = max(3.0, calls / 10)  # WebRTC calls set up ICE and DTLS: ten a second
        limits = Limits(call_timeout=hold + ramp + 60, connect_timeout=30)
        talk = hold + ramp + 2.0 + _TAIL_S  # every call outlives the measured window
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(Call(env, i, [Pause(seconds=talk), HangUp()], limits, dial).run()))
            await asyncio.sleep(ramp / calls)
        while pacer.active < calls and not all(t.done() for t in tasks):  # noqa: ASYNC110 (a poll is fine here)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        pacer.lateness = LatenessHistogram()  # the steady state only: all calls up, none ending
        cpu, opened = _cpu_now(), time.monotonic()
        await asyncio.sleep(hold)
        window, pacer.lateness = pacer.lateness, LatenessHistogram()
        cores = (_cpu_now() - cpu) / (time.monotonic() - opened)
        records = await asyncio.gather(*tasks)
        pacer_task.cancel()
    failed = [r for r in records if str(r.outcome) != "completed"]
    return window, cores, len(failed), failed[0].reason if failed else ""


def _level(dial: Dial, calls: int, hold: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    _pin(0)
    hist, cores, failed, reason = asyncio.run(_hold(dial, calls, hold))
    out.put((hist.summary_ms(), cores, failed, reason))


def _start(target: Any) -> tuple[multiprocessing.Process, int]:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=target, args=(queue,), daemon=True)
    process.start()
    return process, queue.get(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twilio-levels", default="100,200,300")
    parser.add_argument("--webrtc-levels", default="10,20,30,50")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds each level holds its calls")
    parser.add_argument("--quick", action="store_true", help="one small level of each, to check the bench runs")
    args = parser.parse_args()
    if args.quick:
        args.twilio_levels, args.webrtc_levels, args.hold = "20", "5", 3.0
    twilio_agent, twilio_port = _start(_echo_server)
    webrtc_agent, webrtc_port = _start(_webrtc_echo_server)
    dials = {"twilio": Dial(websocket_url=f"ws://127.0.0.1:{twilio_port}/media"),
             "webrtc": Dial(transport="webrtc", offer_url=f"http://127.0.0.1:{webrtc_port}/offer")}
    agents = {"twilio": twilio_agent, "webrtc": webrtc_agent}
    levels = {"twilio": [int(x) for x in args.twilio_levels.split(",")],
              "webrtc": [int(x) for x in args.webrtc_levels.split(",")]}
    best = {"twilio": 0, "webrtc": 0}
    try:
        print("send lateness in the measured window (all calls connected, none ending); caller CPU in that window;\n"
              "the harness process is pinned to CPU 0, the echo agents to CPU 1\n")
        print(f"{'calls':>6} {'transport':<9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  {'verdict':<9}  "
              f"{'caller cores':>12} {'µs per call-second':>18} {'agent cores':>11}  failed")
        for transport in ("twilio", "webrtc"):
            for calls in levels[transport]:
                started = time.monotonic()
                agent_cpu = _cpu_seconds(agents[transport].pid or 0)
                out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
                child = multiprocessing.Process(target=_level, args=(dials[transport], calls, args.hold, out))
                child.start()
                s, cpu, failed, reason = out.get(timeout=args.hold + calls / 5 + 180)
                child.join(30)
                if child.is_alive():
                    child.kill()
                wall = time.monotonic() - started
                agent_cpu = _cpu_seconds(agents[transport].pid or 0) - agent_cpu
                ok = s["p99_ms"] is not None and s["p99_ms"] <= GOAL_MS and not failed
                if ok:
                    best[transport] = max(best[transport], calls)
                print(f"{calls:>6} {transport:<9} {s['p50_ms']!s:>8} {s['p99_ms']!s:>8} {s['max_ms']!s:>8}  "
                      f"{'ok' if ok else 'over 5 ms' if not failed else 'failed':<9}  {cpu:>12.2f} "
                      f"{cpu / calls * 1e6:>18.0f} {agent_cpu / wall:>11.2f}  {failed}"
                      + (f" ({reason[:80]})" if failed else ""), flush=True)
        ratio = best["webrtc"] / best["twilio"] if best["twilio"] else float("nan")
        print(f"\nmost calls at p99 send lateness <= {GOAL_MS:g} ms: twilio {best['twilio']} (levels "
              f"{args.twilio_levels}), webrtc {best['webrtc']} (levels {args.webrtc_levels}); webrtc/twilio "
              f"{ratio:.2f}")
        print(f"aim: at least {GOAL_WEBRTC} concurrent WebRTC calls per process")
    finally:
        for agent in agents.values():
            agent.terminate()
            agent.join(5)
            with contextlib.suppress(Exception):
                if agent.is_alive():
                    agent.kill()


if __name__ == "__main__":
    main()
