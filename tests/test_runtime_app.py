"""The runtime's HTTP surface without a call: webhook signatures and TwiML, health, readiness while draining,
metrics from a per-app registry, and the ``python -m reference_runtime serve`` entry point."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from reference_runtime.app import RUNTIME, create_app
from reference_runtime.config import parse_config
from tests.in_process import with_pytest_memory

TOKEN = "test-auth-token"
REPO = Path(__file__).resolve().parents[1]
FORM = {
    "CallSid": "CA" + "a" * 32,
    "AccountSid": "AC" + "b" * 32,
    "From": "+15550001111",
    "To": "+15559990000",
    "CallStatus": "ringing",
    "ApiVersion": "2010-04-01",
    "Direction": "inbound",
}
PROVIDERS = {
    "stt": {"kind": "deepgram", "base_url": "http://127.0.0.1:9"},
    "llm": {"kind": "openai", "base_url": "http://127.0.0.1:9"},
    "tts": {"kind": "elevenlabs", "base_url": "http://127.0.0.1:9"},
}


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[tuple[str, web.Application, aiohttp.ClientSession]]:
    app = create_app(parse_config(with_pytest_memory({"providers": PROVIDERS, **config})))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            yield f"http://{host}:{port}", app, http
    finally:
        await runner.cleanup()


async def test_webhook_signature_is_checked_when_an_auth_token_is_set() -> None:
    async with running(twilio={"auth_token": TOKEN}) as (url, _, http):
        validator = RequestValidator(TOKEN)
        async with http.post(f"{url}/voice", data=FORM) as response:
            assert response.status == 403  # no signature
        bad = validator.compute_signature(f"{url}/voice", {**FORM, "From": "+19999999999"})
        async with http.post(f"{url}/voice", data=FORM, headers={"X-Twilio-Signature": bad}) as response:
            assert response.status == 403
        for signed_url in (f"{url}/voice", url.rsplit(":", 1)[0] + "/voice"):  # with and without the port
            signature = validator.compute_signature(signed_url, FORM)
            async with http.post(
                f"{url}/voice", data=FORM, headers={"X-Twilio-Signature": signature}
            ) as response:
                assert response.status == 200, signed_url
                assert ET.fromstring(await response.text()).find("./Connect/Stream") is not None


async def test_twiml_stream_url_comes_from_the_host_header_or_the_config() -> None:
    async with running() as (url, _, http):
        async with http.post(f"{url}/voice", data=FORM, headers={"Host": "agent.example.com"}) as response:
            stream = ET.fromstring(await response.text()).find("./Connect/Stream")
        assert stream.get("url") == "ws://agent.example.com/media"
        assert [(p.get("name"), p.get("value")) for p in stream] == [("caller", "+15550001111")]
        headers = {"Host": "agent.example.com", "X-Forwarded-Proto": "https"}
        async with http.post(f"{url}/voice", data=FORM, headers=headers) as response:
            stream = ET.fromstring(await response.text()).find("./Connect/Stream")
        assert stream.get("url") == "wss://agent.example.com/media"
    async with running(public_ws_url="wss://media.example.com/media") as (url, _, http):
        async with http.post(f"{url}/voice", data=FORM) as response:
            stream = ET.fromstring(await response.text()).find("./Connect/Stream")
        assert stream.get("url") == "wss://media.example.com/media"


async def test_health_ready_and_draining() -> None:
    async with running(capacity=3) as (url, app, http):
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200
            health = await response.json()
        assert (health["status"], health["active_calls"], health["capacity"]) == ("ok", 0, 3)
        assert health["rss_bytes"] > 0
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 200

        app[RUNTIME].admission.drain()
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["reason"] == "draining"
        async with http.post(f"{url}/voice", data=FORM) as response:
            assert ET.fromstring(await response.text()).find("./Reject").get("reason") == "busy"
        async with connect(url.replace("http", "ws") + "/media") as ws:
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1013, "draining")


async def test_each_app_has_its_own_metrics_registry() -> None:
    async with running(capacity=2) as (url_a, _, http), running(capacity=5) as (url_b, _, _):
        async with http.get(f"{url_a}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text_a = await response.text()
        async with http.get(f"{url_b}/metrics") as response:
            text_b = await response.text()
    assert "\nruntime_capacity 2.0\n" in text_a
    assert "\nruntime_capacity 5.0\n" in text_b
    assert "runtime_stt_final_latency_seconds" in text_a and "runtime_provider_errors" in text_a


async def _read_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            line = await stream.readline()
            assert line, "the runtime exited before it was listening"
            if line.startswith(b"{"):
                return json.loads(line)


async def test_cli_serve_prints_listening_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "runtime.yaml"
    config.write_text(
        "host: 127.0.0.1\n"
        "port: 8080\n"
        "capacity: 2\n"
        "shutdown_grace_s: 5\n"
        "providers:\n"
        "  stt: {kind: deepgram, base_url: 'http://127.0.0.1:9'}\n"
        "  llm: {kind: openai, base_url: 'http://127.0.0.1:9'}\n"
        "  tts: {kind: deepgram, base_url: 'http://127.0.0.1:9'}\n"
        "safeguards: {}\n",
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reference_runtime",
        "serve",
        "--config",
        str(config),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        listening = await _read_line(process.stdout)
        assert listening["event"] == "listening" and listening["name"] == "runtime"
        assert listening["url"].startswith("http://127.0.0.1:") and not listening["url"].endswith(":8080")
        async with aiohttp.ClientSession() as http, http.get(f"{listening['url']}/healthz") as response:
            assert (await response.json())["capacity"] == 2
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_reports_config_errors_with_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("capacity: 0\nproviders: {}\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reference_runtime",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"capacity" in stderr and b"providers.stt" in stderr
