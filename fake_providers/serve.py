"""Running fake provider apps on loopback: for tests (:func:`serve_app`) and for the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


async def start_app(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start ``app`` listening on ``host:port`` (0 = any free port); returns its runner and base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


@asynccontextmanager
async def serve_app(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL (``http://127.0.0.1:<port>``)."""
    runner, base_url = await start_app(app, host=host, port=port)
    try:
        yield base_url
    finally:
        await runner.cleanup()
