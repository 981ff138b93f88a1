"""``python -m reference_runtime serve --config PATH [--host H] [--port P]``

Prints one flushed JSON line ``{"event": "listening", "name": "runtime", "url": "http://HOST:PORT"}`` when
ready (``--port 0`` picks a free port). SIGTERM/SIGINT drain: no new calls, calls in progress get
``shutdown_grace_s`` to finish, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from aiohttp import web

from reference_runtime.app import RUNTIME, create_app
from reference_runtime.config import ConfigError, RuntimeConfig, load_config


async def serve(config: RuntimeConfig) -> None:
    app = create_app(config)
    runtime = app[RUNTIME]
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(json.dumps({"event": "listening", "name": "runtime", "url": url}), flush=True)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.request_stop)
    try:
        await runtime.stop_requested.wait()
        logging.getLogger("reference_runtime").info(
            "stopping: draining %d call(s) for up to %.0f s",
            len(runtime.admission.active),
            config.shutdown_grace_s,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.admission.wait_idle(), timeout=config.shutdown_grace_s)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_runtime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the reference voice agent")
    serve_cmd.add_argument("--config", required=True, help="YAML or JSON runtime config")
    serve_cmd.add_argument("--host", help="overrides the config's host")
    serve_cmd.add_argument("--port", type=int, help="overrides the config's port (0 = any free port)")
    serve_cmd.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        config = load_config(args.config, overrides=overrides)
    except (ConfigError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
