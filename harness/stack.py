"""The embedded stack: the fake providers and the reference runtime, started as subprocesses on free loopback ports.

Each service prints one JSON line ``{"event": "listening", "name": ..., "url": ...}`` when it is ready; the stack waits
for those lines (and fails with the service's log tail if one dies or stays silent), writes each service's output to
``<run>/stack/<name>.log``, and stops only the processes it started, by their PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.scenario import EmbeddedTarget

AUTH_TOKEN = "voicechaos-embedded-token"
#: The embedded services run at a lower CPU priority than the harness. On one machine the callers (the measuring
#: instrument) and the stack compete for the same cores; if the instrument loses, every frame it sends late is
#: reported as harness lateness and the run is invalid. Lowering the stack's priority keeps the instrument on time
#: and lets CPU contention show where it belongs: as a slower agent.
STACK_NICENESS = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_READY_TIMEOUT = 60.0


class StackError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    urls: dict[str, str] = field(default_factory=dict)
    drain: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class StackEndpoints:
    runtime_url: str
    webhook_url: str
    auth_token: str
    providers: dict[str, str]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_agent(path: Path) -> dict[str, Any]:
    """An agent definition: ``runtime`` (dialog...) and ``providers`` (the scripted LLM...) settings."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise StackError(f"agent definition {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise StackError(f"agent definition {path}: not valid YAML: {exc}") from None
    unknown = set(data) - {"description", "runtime", "providers"}
    if unknown:
        raise StackError(f"agent definition {path}: unknown keys {sorted(unknown)} (expected runtime, providers)")
    return data


def _prepare_child() -> None:
    """Runs in each service's process before exec: a lower CPU priority (see STACK_NICENESS), and on Linux a
    SIGTERM when the harness dies, so that even a harness killed with SIGKILL leaves no service behind."""
    os.nice(STACK_NICENESS)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedStack:
    def __init__(self, target: EmbeddedTarget, *, scenario_dir: Path, run_dir: Path, seed: int) -> None:
        self.target = target
        self.agent_path = (scenario_dir / target.agent).resolve()
        self.dir = run_dir / "stack"
        self.seed = seed
        self.services: list[Service] = []

    async def start(self) -> StackEndpoints:
        self.dir.mkdir(parents=True, exist_ok=True)
        agent = load_agent(self.agent_path)
        providers_config = deep_merge(agent.get("providers") or {}, self.target.providers)
        providers_config.setdefault("seed", self.seed)
        providers_file = self.dir / "providers.json"
        providers_file.write_text(json.dumps(providers_config, indent=2))
        fakes = await self._spawn(
            "fake_providers",
            [sys.executable, "-m", "fake_providers", "serve", "--host", "127.0.0.1", "--port", "0",
             "--provider", "deepgram", "--provider", "elevenlabs", "--provider", "openai",
             "--config", str(providers_file)],
            expect=["deepgram", "elevenlabs", "openai"],
        )
        runtime_config = deep_merge(
            {
                "host": "127.0.0.1",
                "port": 0,
                "capacity": self.target.capacity,
                "twilio": {"auth_token": AUTH_TOKEN},
                "providers": {
                    "stt": {"kind": "deepgram", "base_url": fakes.urls["deepgram"]},
                    "llm": {"kind": "openai", "base_url": fakes.urls["openai"]},
                    "tts": {"kind": "elevenlabs", "base_url": fakes.urls["elevenlabs"]},
                },
            },
            deep_merge(agent.get("runtime") or {}, self.target.runtime),
        )
        runtime_file = self.dir / "runtime.yaml"
        runtime_file.write_text(yaml.safe_dump(runtime_config, sort_keys=False))
        runtime = await self._spawn(
            "runtime",
            [sys.executable, "-m", "reference_runtime", "serve", "--config", str(runtime_file)],
            expect=["runtime"],
        )
        runtime_url = runtime.urls["runtime"]
        return StackEndpoints(runtime_url=runtime_url, webhook_url=f"{runtime_url}/voice", auth_token=AUTH_TOKEN,
                              providers=dict(fakes.urls))

    async def _spawn(self, name: str, argv: list[str], expect: list[str]) -> Service:
        log_path = self.dir / f"{name}.log"
        log = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=_prepare_child)
        log.close()
        service = Service(name, process, log_path)
        self.services.append(service)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                while set(expect) - set(service.urls):
                    line = await process.stdout.readline()
                    if not line:
                        code = await process.wait()
                        raise StackError(f"{name} exited with code {code} before it was ready. "
                                         f"Last lines of {log_path}:\n{self._tail(log_path)}")
                    with log_path.open("ab") as out:
                        out.write(line)
                    with contextlib.suppress(json.JSONDecodeError):
                        message = json.loads(line)
                        if isinstance(message, dict) and message.get("event") == "listening":
                            service.urls[str(message["name"])] = str(message["url"])
        except TimeoutError:
            raise StackError(f"{name} did not report listening within {_READY_TIMEOUT:g} s. "
                             f"Last lines of {log_path}:\n{self._tail(log_path)}") from None
        service.drain = asyncio.create_task(self._drain(process.stdout, log_path))
        return service

    @staticmethod
    async def _drain(stream: asyncio.StreamReader, path: Path) -> None:
        with path.open("ab") as out:
            while line := await stream.readline():
                out.write(line)
                out.flush()

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running service has used so far, from /proc (Linux); {} elsewhere."""
        out: dict[str, float] = {}
        ticks = os.sysconf("SC_CLK_TCK")
        for service in self.services:
            try:
                fields = Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[service.name] = round((int(fields[11]) + int(fields[12])) / ticks, 2)  # utime, stime
        return out

    async def stop(self) -> None:
        """SIGTERM every process we started (by PID), SIGKILL what is still running after a grace period."""
        for service in reversed(self.services):
            process = service.process
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for service in reversed(self.services):
            process = service.process
            try:
                await asyncio.wait_for(process.wait(), timeout=10.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if service.drain is not None:
                service.drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service.drain
        self.services.clear()
