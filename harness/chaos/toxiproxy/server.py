"""The embedded Toxiproxy server: in process (:class:`EmbeddedToxiproxy`) or as a command (:func:`main`).

It keeps the Toxiproxy v2 HTTP API and toxic semantics (``shared/protocols/toxiproxy.md``) so the harness, and any
Toxiproxy client, can use it where the real Go ``toxiproxy-server`` cannot be installed. It is the composition root:
the toxic registry, the clock and the random source are built here (or passed in) and handed down explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from random import Random
from types import TracebackType
from typing import TextIO

from aiohttp import web

from harness.chaos.toxiproxy.api import build_app
from harness.chaos.toxiproxy.proxy import ProxyCollection
from harness.chaos.toxiproxy.toxics import ToxicRegistry, default_toxics
from harness.chaos.toxiproxy.wire import format_host_port
from harness.clock import Clock, MonotonicClock
from harness.safety import is_loopback_host

DEFAULT_PORT = 8474


class EmbeddedToxiproxy:
    """A Toxiproxy API server and its proxies on the running event loop.

    ``async with EmbeddedToxiproxy("127.0.0.1", 0) as tp:`` then talk to ``tp.url`` (port 0 takes any free port).
    Leaving the block closes every proxy and connection.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        toxics: ToxicRegistry | None = None,
        clock: Clock | None = None,
        rng: Random | None = None,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(f"toxiproxy: {host!r} is not a loopback address; pass allow_remote=True to listen there")
        self.host = host
        self.port = port
        self.collection = ProxyCollection(
            toxics if toxics is not None else default_toxics(),
            clock=clock or MonotonicClock(),
            rng=rng or Random(),
            allow_remote=allow_remote,
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{format_host_port(self.host, self.port)}"

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.collection), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host, self.port = runner.addresses[0][:2]

    async def stop(self) -> None:
        await self.collection.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmbeddedToxiproxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve(
    host: str, port: int, *, allow_remote: bool, seed: int | None, out: TextIO, stop: asyncio.Event
) -> None:
    """Run until ``stop`` is set; one ``listening`` line on ``out`` once the API answers."""
    async with EmbeddedToxiproxy(host, port, rng=Random(seed), allow_remote=allow_remote) as server:
        out.write(json.dumps({"event": "listening", "name": "toxiproxy", "url": server.url}) + "\n")
        out.flush()
        await stop.wait()


async def _serve_until_signalled(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(args.host, args.port, allow_remote=args.allow_remote, seed=args.seed, out=sys.stdout, stop=stop)
    except OSError as exc:
        print(f"toxiproxy: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.chaos.toxiproxy`` (and ``voicechaos toxiproxy``): serve the API until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.chaos.toxiproxy",
        description="An embedded Toxiproxy server (the v2 HTTP API and TCP toxics of toxiproxy-server 2.12.0).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"API port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host and non-loopback proxy listen addresses (you own the network)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for toxicity, jitter and slicer draws")
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback_host(args.host):
        print(
            f"toxiproxy: --host {args.host} is not a loopback address; voicechaos keeps chaos traffic on loopback "
            "unless you pass --allow-remote",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_serve_until_signalled(args))
