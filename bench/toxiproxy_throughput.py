"""What a proxy of the embedded Toxiproxy costs with no toxics, measured beside a direct loopback connection.

Each measure is taken for direct connections and through a proxy in the same run, interleaved, so that the
machine's noise falls on both alike:

1. throughput: one connection, 64 KiB writes into a sink; MB/s and the proxied/direct ratio (goal: >= 20 %);
2. added round trip of a small message (32 bytes, ping-pong on one connection): p50 and p99 of proxied minus direct
   (goal: <= 50 µs at p50);
3. the same round trip over 200 concurrent open connections, taken in turn (goal: nothing added beyond 2.: a
   connection costs nothing while it waits);
4. 200 connections each sending a 160-byte frame every 20 ms (a phone call's media pace) and timing its echo: the
   proxy under load. On 2 cores this is three busy processes (client, proxy, upstream) on two CPUs, so it measures
   scheduling as much as the proxy; a minimal C epoll relay measured here added about 250 µs at p50 to it.

The upstream (an echo and sink server) and the embedded Toxiproxy (``python -m harness.chaos.toxiproxy``) each run
in their own process, as in a chaos run; the client runs here. For reference, the real Go toxiproxy-server on this
kind of machine (2 cores) measured about 37 % of direct throughput and about 30 µs added at p50.

Run: ``.venv/bin/python -m bench.toxiproxy_throughput`` (about a minute). Machines are noisy: compare the columns of
one run, don't quote them across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

CHUNK = 64 * 1024
PING = b"p" * 32
FRAME = 160
GOAL_RATIO = 0.20
GOAL_ADDED_P50_US = 50.0


# --- the upstream: echo, or sink when the first byte says so --------------------------------------------------------


def _upstream_server(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    # BufferedProtocol everywhere here: asyncio's plain Protocol allocates 256 KiB per read, which would make the
    # client and upstream, not the proxy, the thing measured.
    buffer = memoryview(bytearray(256 * 1024))

    class Upstream(asyncio.BufferedProtocol):
        """Echo everything; a connection that starts with b"S" + 8-byte length is a sink that acks when all came."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.mode: str | None = None
            self.remaining = 0
            self.head = b""

        def get_buffer(self, sizehint: int) -> memoryview:
            return buffer

        def buffer_updated(self, nbytes: int) -> None:
            if self.mode == "sink":
                self.remaining -= nbytes
                if self.remaining <= 0:
                    self.transport.write(b"k")
                return
            self.data_received(bytes(buffer[:nbytes]))

        def data_received(self, data: bytes) -> None:
            if self.mode is None:
                self.head += data
                if self.head[:1] != b"S":
                    self.mode = "echo"
                    self.transport.write(self.head)
                    return
                if len(self.head) < 9:
                    return
                self.mode = "sink"
                self.remaining = struct.unpack("!Q", self.head[1:9])[0] - (len(self.head) - 9)
            elif self.mode == "echo":
                self.transport.write(data)
                return
            else:
                self.remaining -= len(data)
            if self.mode == "sink" and self.remaining <= 0:
                self.transport.write(b"k")

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


# --- the embedded Toxiproxy in its own process ---------------------------------------------------------------------


def _start_toxiproxy() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.chaos.toxiproxy", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, json.loads(line)["url"]


def _create_proxy(api: str, upstream_port: int) -> int:
    body = json.dumps({"name": "bench", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream_port}"}).encode()
    request = urllib.request.Request(f"{api}/proxies", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["listen"].rsplit(":", 1)[1])


# --- 1. throughput -----------------------------------------------------------------------------------------------


def throughput(port: int, total: int) -> float:
    """MB/s of ``total`` bytes written in 64 KiB writes, until the sink acknowledged the last byte."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        block = b"x" * CHUNK
        start = time.perf_counter()
        sock.sendall(b"S" + struct.pack("!Q", total))
        sent = 0
        while sent < total:
            n = min(CHUNK, total - sent)
            sock.sendall(block if n == CHUNK else block[:n])
            sent += n
        if sock.recv(1) != b"k":
            raise RuntimeError("the sink did not acknowledge")
        return total / (time.perf_counter() - start) / 1e6


# --- 2. and 3. small round trips --------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(
    direct_port: int, proxied_port: int, count: int, connections: int = 1
) -> tuple[list[float], list[float]]:
    """µs per 32-byte ping-pong, direct and proxied alternately (so both see the same noise), taking the
    ``connections`` open connections of each kind in turn."""
    direct = [_connect(direct_port) for _ in range(connections)]
    proxied = [_connect(proxied_port) for _ in range(connections)]
    times: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(count + 1000):
            pair = ((direct[i % connections], times[0]), (proxied[i % connections], times[1]))
            for sock, out in pair:
                start = time.perf_counter_ns()
                sock.sendall(PING)
                got = 0
                while got < len(PING):
                    got += len(sock.recv(4096))
                if i >= 1000:  # warm-up left out
                    out.append((time.perf_counter_ns() - start) / 1000)
    finally:
        for sock in (*direct, *proxied):
            sock.close()
    return times


# --- 4. many paced connections ---------------------------------------------------------------------------------------


class _Paced(asyncio.BufferedProtocol):
    def __init__(self, samples: list[float]) -> None:
        self.samples = samples
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.read = memoryview(bytearray(64 * 1024))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.read

    def buffer_updated(self, nbytes: int) -> None:
        now = time.perf_counter_ns()
        self.buffer += self.read[:nbytes]
        while len(self.buffer) >= FRAME:
            sent = struct.unpack("!q", self.buffer[:8])[0]
            self.buffer = self.buffer[FRAME:]
            self.samples.append((now - sent) / 1000)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.transport.write(struct.pack("!q", time.perf_counter_ns()).ljust(FRAME, b"f"))


async def paced_connections(port: int, connections: int, seconds: float, interval: float = 0.020) -> list[float]:
    """µs from write to echo of every frame of ``connections`` connections sending one frame per ``interval``."""
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    callers: list[_Paced] = []
    for _ in range(connections):
        caller = _Paced(samples)
        await loop.create_connection(lambda caller=caller: caller, "127.0.0.1", port)  # type: ignore[misc]
        callers.append(caller)
    groups = 20  # spread the connections over the interval, as calls that did not start together
    start = loop.time() + 0.05
    tick = 0
    while loop.time() - start < seconds:
        at = start + tick * interval / groups
        await asyncio.sleep(max(0.0, at - loop.time()))
        for caller in callers[tick % groups :: groups]:
            caller.send()
        tick += 1
    await asyncio.sleep(0.2)
    for caller in callers:
        assert caller.transport is not None
        caller.transport.close()
    return samples[len(samples) // 10 :]  # the first tenth is warm-up


# --- report ---------------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    measure: str
    direct: str
    proxied: str
    result: str
    goal: str
    ok: bool | None

    def line(self) -> str:
        verdict = "" if self.ok is None else ("ok" if self.ok else "MISSED")
        return f"{self.measure:<42} {self.direct:>10} {self.proxied:>10} {self.result:>10}   {self.goal:<24} {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024, help="bytes per throughput run (MB)")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs of each kind (the best counts)")
    parser.add_argument("--round-trips", type=int, default=20000, help="round trips of each kind per measure")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=12.0, help="paced load: seconds of each kind, in 4 rounds")
    args = parser.parse_args()
    n = args.connections

    port_queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    upstream = multiprocessing.Process(target=_upstream_server, args=(port_queue,), daemon=True)
    upstream.start()
    upstream_port = port_queue.get(timeout=30)
    toxiproxy, api = _start_toxiproxy()
    try:
        proxied_port = _create_proxy(api, upstream_port)
        total = args.megabytes * 1_000_000
        direct_mbs: list[float] = []
        proxied_mbs: list[float] = []
        for _ in range(args.runs):
            direct_mbs.append(throughput(upstream_port, total))
            proxied_mbs.append(throughput(proxied_port, total))
        one = round_trips(upstream_port, proxied_port, args.round_trips)
        many = round_trips(upstream_port, proxied_port, args.round_trips, connections=n)
        paced: tuple[list[float], list[float]] = ([], [])
        for _ in range(4):  # rounds, alternating, so that a noisy moment does not fall on one kind only
            paced[0].extend(asyncio.run(paced_connections(upstream_port, n, args.seconds / 4)))
            paced[1].extend(asyncio.run(paced_connections(proxied_port, n, args.seconds / 4)))
    finally:
        toxiproxy.terminate()
        toxiproxy.wait(timeout=10)
        upstream.terminate()

    ratio = max(proxied_mbs) / max(direct_mbs)
    rows = [
        Row(
            "throughput, 64 KiB writes (MB/s)",
            f"{max(direct_mbs):.0f}",
            f"{max(proxied_mbs):.0f}",
            f"{ratio:.0%}",
            f">= {GOAL_RATIO:.0%} of direct",
            ratio >= GOAL_RATIO,
        ),
    ]
    for label, (direct, proxied) in (
        ("round trip, 1 connection", one),
        (f"round trip, {n} open connections", many),
        (f"{n} connections at 50 frames/s", paced),
    ):
        for q in (0.5, 0.99):
            added = _pct(proxied, q) - _pct(direct, q)
            goal = f"<= {GOAL_ADDED_P50_US:.0f} µs added" if q == 0.5 else "(reported)"
            rows.append(
                Row(
                    f"{label} p{round(q * 100)} (µs)",
                    f"{_pct(direct, q):.1f}",
                    f"{_pct(proxied, q):.1f}",
                    f"+{added:.1f}",
                    goal,
                    added <= GOAL_ADDED_P50_US if q == 0.5 else None,
                )
            )
    print(f"{'measure':<42} {'direct':>10} {'proxied':>10} {'embedded':>10}   {'goal':<24} verdict")
    for row in rows:
        print(row.line())
    print(
        f"throughput runs (MB/s): direct {', '.join(f'{x:.0f}' for x in direct_mbs)}; "
        f"proxied {', '.join(f'{x:.0f}' for x in proxied_mbs)}. Round trips: {len(one[0])} of each kind per measure; "
        f"paced frames: {len(paced[0])} direct, {len(paced[1])} proxied."
    )


if __name__ == "__main__":
    main()
