"""The ``/_chaos`` control API: the same contract on every provider app (list, add, get, remove, clear faults;
limits; stats; routes), its validation errors, and that the control routes themselves are never faulted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fake_providers import (
    create_crm_app,
    create_deepgram_app,
    create_elevenlabs_app,
    create_openai_app,
    gate_of,
    serve_app,
)
from fake_providers.config import ConfigError, FakeProvidersConfig, load_faults, with_faults

APPS: dict[str, tuple[Callable[[], web.Application], str]] = {
    "deepgram": (create_deepgram_app, "listen"),
    "elevenlabs": (create_elevenlabs_app, "ws"),
    "openai": (create_openai_app, "chat"),
    "crm": (create_crm_app, "tools.book_appointment"),
}


@pytest.fixture(params=sorted(APPS))
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str, web.Application]]:
    factory, route = APPS[request.param]
    app = factory()
    async with serve_app(app) as url:
        yield url, route, app


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def test_the_fault_crud_contract(provider: tuple[str, str, web.Application]) -> None:
    url, route, app = provider
    chaos = f"{url}/_chaos"
    async with aiohttp.ClientSession() as session:
        assert (await call(session, "GET", f"{chaos}/faults"))[1]["faults"] == []
        status, added = await call(session, "POST", f"{chaos}/faults", {"kind": "error", "status": 502})
        assert status == 201 and added["id"] == "error-1"
        assert added["fault"] == {"id": "error-1", "kind": "error", "probability": 1.0, "route": None, "status": 502}
        status, named = await call(
            session, "POST", f"{chaos}/faults", {"id": "net-1", "kind": "stall", "route": route, "stall_ms": 100}
        )
        assert status == 201 and named["id"] == "net-1" and named["fault"]["route"] == [route]
        assert (await call(session, "POST", f"{chaos}/faults", {"id": "net-1", "kind": "garbage"}))[0] == 409
        listed = (await call(session, "GET", f"{chaos}/faults"))[1]["faults"]
        assert [f["id"] for f in listed] == ["error-1", "net-1"]
        assert (await call(session, "GET", f"{chaos}/faults/net-1"))[1]["stall_ms"] == 100
        assert (await call(session, "DELETE", f"{chaos}/faults/error-1")) == (200, {"removed": ["error-1"]})
        status, missing = await call(session, "DELETE", f"{chaos}/faults/error-1")
        assert status == 404 and "no fault 'error-1'" in missing["error"]
        assert (await call(session, "GET", f"{chaos}/faults/nope"))[0] == 404
        await call(session, "POST", f"{chaos}/faults", {"kind": "truncate"})
        assert (await call(session, "DELETE", f"{chaos}/faults")) == (200, {"removed": ["net-1", "truncate-2"]})
        assert gate_of(app).faults == {}
        routes = (await call(session, "GET", f"{chaos}/routes"))[1]
        assert "rate_limit" in routes["fault_kinds"] and routes["routes"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"kind": "rate_limit", "probability": -0.1}, "probability: Input should be greater than or equal to 0"),
        ({"kind": "slow_first_byte", "delay_ms": "soon"}, "delay_ms: Input should be a valid number"),
        ({"kind": "error", "route": "nowhere"}, "route: unknown route 'nowhere' (known: chat, models)"),
        ({"kind": "teleport"}, "kind: unknown fault kind 'teleport'"),
        ({"kind": "error", "id": 7}, "id: must be a string"),
        ({"kind": "error", "id": "has space"}, "id: 1 to 64 letters"),
    ],
)
async def test_bad_bodies_get_400_naming_the_field(body: Any, error: str) -> None:
    async with serve_app(create_openai_app()) as url, aiohttp.ClientSession() as session:
        status, answer = await call(session, "POST", f"{url}/_chaos/faults", body)
        assert status == 400 and answer["error"].startswith(error), answer
        async with session.post(f"{url}/_chaos/faults", data=b"{nope") as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith("(top level): request body is not valid JSON")
        assert (await call(session, "GET", f"{url}/_chaos/faults"))[1]["faults"] == []


async def test_control_routes_are_never_faulted_limited_or_counted() -> None:
    app = create_openai_app()
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        await call(session, "POST", f"{url}/_chaos/faults", {"kind": "error"})
        await call(session, "POST", f"{url}/_chaos/faults", {"kind": "slow_first_byte", "delay_ms": 5000})
        await call(session, "POST", f"{url}/_chaos/limits", {"concurrent_streams": 0})
        async with asyncio.timeout(3):  # no 5 s delay, no 500, no 429
            status, stats = await call(session, "GET", f"{url}/_chaos/stats")
            assert status == 200
            assert (await call(session, "GET", f"{url}/_chaos/faults"))[0] == 200
        async with session.get(f"{url}/v1/models", headers={"Authorization": "Bearer k"}) as response:
            assert response.status == 429, "the limit, checked first, refuses the provider route"
        stats = (await call(session, "GET", f"{url}/_chaos/stats"))[1]
    assert stats["requests"] == 1 and stats["by_route"] == {"models": 1}
    assert stats["refused"] == {"total": 1, "by_kind": {"limit.concurrent_streams": 1}, "by_status": {"429": 1}}
    assert stats["faults_applied"] == {} and stats["faults_in_force"] == ["error-1", "slow_first_byte-2"]
    assert stats["limits"]["concurrent_streams"] == 0 and stats["streams_open"] == 0


async def test_stats_count_streams_open_and_faults_applied_per_id() -> None:
    app = create_deepgram_app()
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        await call(session, "POST", f"{url}/_chaos/faults", {"id": "half", "kind": "rate_limit", "probability": 0.5})
        ws_url = f"{url}/v1/listen?encoding=mulaw&sample_rate=8000"
        opened = []
        for _ in range(12):
            try:
                opened.append(await session.ws_connect(ws_url, headers={"Authorization": "Token k"}))
            except aiohttp.WSServerHandshakeError as refused:
                assert refused.status == 429
        stats = (await call(session, "GET", f"{url}/_chaos/stats"))[1]
        for ws in opened:
            await ws.close()
    assert 0 < len(opened) < 12
    assert stats["streams_open"] == len(opened) and stats["peak_streams_open"] == len(opened)
    assert stats["faults_applied"] == {"half": 12 - len(opened)}
    assert stats["refused"]["by_kind"] == {"rate_limit": 12 - len(opened)}


# -- faults in force from the start: config sections, --faults files, the CLI -------------------------------

FAULTS_FILE = """
openai:
  faults:
    - {id: ignored-here, kind: error}
deepgram:
  - {kind: stall, route: listen, after_chunks: 2, stall_ms: 3000}
"""


def test_faults_file_validation_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(FAULTS_FILE)
    with pytest.raises(ConfigError, match=r"faults\.yaml: openai\.faults\.0\.error\.id: Extra inputs"):
        load_faults(path)
    path.write_text("deepgram: [{kind: error, route: chat}]\n")
    with pytest.raises(ConfigError, match=r"deepgram: faults\.0\.route: unknown route 'chat'"):
        load_faults(path)
    path.write_text("cohere: []\n")
    with pytest.raises(ConfigError, match="cohere: Extra inputs are not permitted"):
        load_faults(path)
    path.write_text(
        "openai: {faults: [{kind: rate_limit, probability: 0.25}], limits: {requests_per_second: 3}}\n"
        "crm: [{kind: error, status: 503, route: workflow, probability: 0.05}]\n"
    )
    base = FakeProvidersConfig.model_validate({"openai": {"faults": [{"kind": "garbage"}]}})
    merged = with_faults(base, load_faults(path))
    assert [f.kind for f in merged.openai.faults] == ["garbage", "rate_limit"]
    assert merged.openai.limits is not None and merged.openai.limits.requests_per_second == 3
    assert merged.crm.faults[0].route == ("workflow",) and merged.deepgram.faults == []


async def test_cli_serves_crm_and_applies_faults_from_the_start(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"openai": [{"kind": "rate_limit", "route": "chat", "retry_after_s": 3}]}))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_providers", "serve", "--port", "0",
        "--provider", "openai", "--provider", "crm", "--faults", str(faults),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            lines = [json.loads(await process.stdout.readline()) for _ in range(2)]
        assert [(line["event"], line["name"]) for line in lines] == [("listening", "openai"), ("listening", "crm")]
        urls = {line["name"]: line["url"] for line in lines}
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            async with session.post(
                f"{urls['openai']}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": "Bearer k"},
            ) as response:
                assert response.status == 429 and response.headers["retry-after"] == "3"
            status, listed = await call(session, "GET", f"{urls['openai']}/_chaos/faults")
            assert status == 200 and [f["kind"] for f in listed["faults"]] == ["rate_limit"]
            status, result = await call(
                session, "POST", f"{urls['crm']}/tools", {"tool": "check_calendar", "arguments": {"day": "Friday"}}
            )
            assert status == 200 and result["day"] == "Friday" and result["slots"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0


async def test_cli_refuses_a_bad_faults_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("openai: [{kind: stall, stall_ms: -5}]\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_providers", "serve", "--provider", "openai", "--faults", str(faults),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 2 and stdout == b""
    assert b"faults.yaml: openai.faults.0.stall.stall_ms: Input should be greater than or equal to 0" in stderr
