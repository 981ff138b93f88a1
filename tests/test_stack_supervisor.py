"""The embedded stack restarts a runtime that exits during a run (a drained or crashed worker), on the same
address, as an orchestrator would."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.scenario import EmbeddedTarget
from harness.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


async def test_a_killed_runtime_comes_back_on_the_same_address(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    restarted = asyncio.Event()

    def on_event(name: str, fields: dict[str, Any]) -> None:
        events.append((name, fields))
        if name == "runtime_restarted":
            restarted.set()

    stack = EmbeddedStack(EmbeddedTarget(agent="agents/dental.yaml"), scenario_dir=ROOT / "scenarios",
                          run_dir=tmp_path, seed=1, on_event=on_event)
    endpoints = await stack.start()
    try:
        runtime = next(s for s in stack.services if s.name == "runtime")
        os.kill(runtime.process.pid, signal.SIGKILL)
        await asyncio.wait_for(restarted.wait(), timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"{endpoints.runtime_url}/healthz") as response:
            assert response.status == 200
        exited = [fields for name, fields in events if name == "runtime_exited"]
        assert exited and exited[0]["code"] == -signal.SIGKILL and not exited[0]["drained"]
        assert stack.restarts == 1
    finally:
        await stack.stop()
    assert all(s.process.returncode is not None for s in stack.services) or not stack.services


async def test_a_runtime_over_its_memory_limit_is_killed_like_a_container_and_restarted(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    restarted = asyncio.Event()

    def on_event(name: str, fields: dict[str, Any]) -> None:
        events.append((name, fields))
        if name == "runtime_restarted":
            restarted.set()

    # a Python runtime needs far more than 20 MB: it is over the limit as soon as it runs
    stack = EmbeddedStack(EmbeddedTarget(agent="agents/dental.yaml", memory_limit_mb=20), scenario_dir=ROOT /
                          "scenarios", run_dir=tmp_path, seed=1, on_event=on_event)
    await stack.start()
    try:
        await asyncio.wait_for(restarted.wait(), timeout=60)
    finally:
        await stack.stop()
    killed = [fields for name, fields in events if name == "runtime_oom_killed"]
    assert killed and killed[0]["rss_mb"] > 20 and killed[0]["limit_mb"] == 20
    exited = [fields for name, fields in events if name == "runtime_exited"]
    assert exited[0]["oom_killed"] and exited[0]["code"] == -signal.SIGKILL
