"""``python -m fake_providers serve``: the fake providers in one process, each on its own port.

Each provider gets its own port so that a Toxiproxy proxy can sit in front of each. ``--port`` applies to the
first provider; the others take the port their config section gives, or any free port. When a provider is
listening, one line goes to stdout (flushed)::

    {"event": "listening", "name": "deepgram", "url": "http://127.0.0.1:43121"}

Providers: ``deepgram``, ``elevenlabs``, ``openai``, ``crm`` (the CRM/calendar/workflow API), and the fallbacks
of another API family: ``anthropic`` (Messages API) and ``assemblyai`` (Universal-Streaming STT). Faults and
limits in force from the start come from the config's sections or from ``--faults FILE`` (see
``fake_providers/config.py``); at run time every provider's ``/_chaos`` control API changes them
(fake_providers/FAULTS.md).

SIGTERM or SIGINT stops every server and exits 0. Nothing else is printed to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TextIO

from aiohttp import web

from fake_providers.config import (
    PROVIDERS,
    ConfigError,
    FakeProvidersConfig,
    load_config,
    load_faults,
    provider_rng,
    with_faults,
)
from fake_providers.serve import start_app


async def serve(
    names: list[str],
    config: FakeProvidersConfig,
    *,
    host: str,
    first_port: int | None,
    out: TextIO,
    stop: asyncio.Event,
) -> None:
    """Run the named providers until ``stop`` is set, announcing each on ``out`` once it listens."""
    runners: list[web.AppRunner] = []
    try:
        for i, name in enumerate(names):
            section = getattr(config, name)
            port = first_port if i == 0 and first_port is not None else (section.port or 0)
            app = PROVIDERS[name](section, rng=provider_rng(config, name))
            runner, url = await start_app(app, host=host, port=port)
            runners.append(runner)
            out.write(json.dumps({"event": "listening", "name": name, "url": url}) + "\n")
            out.flush()
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _serve_until_signalled(args: argparse.Namespace, config: FakeProvidersConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    names = list(dict.fromkeys(args.provider or PROVIDERS))
    try:
        await serve(names, config, host=args.host, first_port=args.port, out=sys.stdout, stop=stop)
    except OSError as exc:
        print(f"fake_providers: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fake_providers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run fake providers until SIGTERM/SIGINT")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=None, help="port of the first provider (0 = any free)")
    serve_cmd.add_argument(
        "--provider",
        action="append",
        choices=sorted(PROVIDERS),
        help="a provider to run (repeatable; default: all)",
    )
    serve_cmd.add_argument("--config", type=Path, default=None, help="JSON or YAML config file")
    serve_cmd.add_argument(
        "--faults", type=Path, default=None, help="JSON or YAML file of faults/limits per provider, from the start"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else FakeProvidersConfig()
        if args.faults:
            config = with_faults(config, load_faults(args.faults))
    except ConfigError as exc:
        print(f"fake_providers: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve_until_signalled(args, config))
