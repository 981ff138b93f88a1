"""``python -m harness.chaos.toxiproxy``: the listening line, a clean exit on SIGTERM, loopback only by default."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp

from harness.chaos.toxiproxy import main


async def test_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness.chaos.toxiproxy",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert line["event"] == "listening" and line["name"] == "toxiproxy"
        assert line["url"].startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session, session.get(line["url"] + "/version") as response:
            assert await response.read() == b'{"version": "2.12.0"}\n'
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_refuses_a_non_loopback_host_without_allow_remote(capsys: object) -> None:
    assert main(["--host", "192.0.2.1", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err  # type: ignore[attr-defined]
