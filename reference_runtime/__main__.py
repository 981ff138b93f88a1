"""``python -m reference_runtime serve --config PATH [--host H] [--port P]`` (and ``check-config PATH``)

Prints one flushed JSON line ``{"event": "listening", "name": "runtime", "url": "http://HOST:PORT"}`` when
ready (``--port 0`` picks a free port). SIGTERM/SIGINT drain: no new calls, calls in progress get
``shutdown_grace_s`` to finish, then the process exits 0.

The memory safeguard (fixed mode, RSS at ``memory.drain_fraction`` of the budget) drains the same way but lets the
calls in progress finish (up to ``memory.drain_timeout_s``), prints ``{"event": "drained", "name": "runtime",
"reason": "memory", "exit_code": 75, "rss_bytes": ..., "budget_bytes": ..., "fraction": ..., "calls_cut": N}``
and exits 75 (``EX_TEMPFAIL``): "drained on purpose, restart me" for its supervisor.
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
from reference_runtime.compat import check_config, describe, ensure_compatible, planned_formats, telephony_side
from reference_runtime.config import ConfigError, RuntimeConfig, load_config


async def serve(config: RuntimeConfig) -> int:
    """Serve until SIGTERM/SIGINT or a memory drain; returns the process's exit code."""
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
        # a memory drain lets the calls in progress finish; a signal gives them the shutdown grace
        wait_s = config.memory.drain_timeout_s if runtime.stop_reason == "memory" else config.shutdown_grace_s
        logging.getLogger("reference_runtime").info(
            "stopping (%s): draining %d call(s) for up to %.0f s",
            runtime.stop_reason,
            len(runtime.admission.active),
            wait_s,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.admission.wait_idle(), timeout=wait_s)
        calls_cut = len(runtime.admission.active)
    finally:
        await runner.cleanup()
    if runtime.stop_reason == "memory":
        drained = {"event": "drained", "name": "runtime", "reason": "memory", "exit_code": runtime.exit_code,
                   **runtime.stop_detail, "calls_cut": calls_cut}
        print(json.dumps(drained), flush=True)
    return runtime.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_runtime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the reference voice agent")
    serve_cmd.add_argument("--config", required=True, help="YAML or JSON runtime config")
    serve_cmd.add_argument("--host", help="overrides the config's host")
    serve_cmd.add_argument("--port", type=int, help="overrides the config's port (0 = any free port)")
    serve_cmd.add_argument("--log-level", default="INFO")
    check_cmd = commands.add_parser(
        "check-config", help="check a config's telephony/STT/TTS audio compatibility (exit 0 sound, 1 not, 2 invalid)"
    )
    check_cmd.add_argument("config", help="YAML or JSON runtime config")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config_command(args.config)

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        config = load_config(args.config, overrides=overrides)
        ensure_compatible(config, source=args.config)  # safeguard 2: refused before any call
    except (ConfigError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    return asyncio.run(serve(config))


def check_config_command(path: str) -> int:
    """The onboarding check: one line per problem on stderr (exit 1), or what will be used on stdout (exit 0)."""
    try:
        config = load_config(path)
    except (ConfigError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    problems = check_config(config)
    if problems:
        print(f"{path}: incompatible audio formats:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    formats = planned_formats(config)
    print(
        f"{path}: compatible: {telephony_side(config)} {describe(formats.telephony)}, "
        f"stt {describe(formats.stt)}, tts {describe(formats.tts)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
