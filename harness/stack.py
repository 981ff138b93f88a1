"""The embedded stack: the fake providers and the reference runtime, started as subprocesses on free loopback ports,
with a Toxiproxy proxy between the runtime and each of its dependencies (see :mod:`harness.chaos.network`).

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
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.chaos.network import Dependency, ToxiproxyChoice, choose_toxiproxy, upstream_of
from harness.chaos.toxiproxy_client import ToxiproxyClient, ToxiproxyError
from harness.safety import check_target
from harness.scenario import EmbeddedTarget
from harness.storage import StorageEndpoint, serve_argv

AUTH_TOKEN = "voicechaos-embedded-token"
#: The embedded services run at a lower CPU priority than the harness. On one machine the callers (the measuring
#: instrument) and the stack compete for the same cores; if the instrument loses, every frame it sends late is
#: reported as harness lateness and the run is invalid. Lowering the stack's priority keeps the instrument on time
#: and lets CPU contention show where it belongs: as a slower agent.
STACK_NICENESS = 5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_READY_TIMEOUT = 60.0
#: the exit code of a runtime that drained on purpose (memory safeguard) and asks to be restarted
RUNTIME_DRAINED_EXIT = 75
MAX_RUNTIME_RESTARTS = 20
RESTART_DELAY_S = 0.5
OOM_POLL_S = 0.25


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
    toxiproxy_url: str = ""
    toxiproxy: str = ""  # which one (ToxiproxyChoice.describe)
    dependencies: dict[str, Dependency] = field(default_factory=dict)
    storage: StorageEndpoint | None = None  # where the runtime's recordings go (listed directly, not via the proxy)
    media_via: str | None = None  # host:port of the caller leg's proxy: callers open their media streams there

    @property
    def webrtc_offer_url(self) -> str:
        """Where WebRTC callers POST their offer (the runtime's signalling; their media is UDP, not proxied)."""
        return f"{self.runtime_url}/webrtc/offer"

#: the runtime's dependencies and the fake that serves each (the stack puts a proxy in front of every one)
FAKE_OF = {"stt": "deepgram", "tts": "elevenlabs", "llm": "openai", "crm": "crm",
           # the fallbacks of safeguard 4, each of another API family than its primary, each behind its own proxy
           # (Aura is served by the Deepgram fake, but a fault on the STT proxy must not reach the TTS fallback)
           "stt_fallback": "assemblyai", "tts_fallback": "deepgram", "llm_fallback": "anthropic"}
FAKES = tuple(dict.fromkeys(FAKE_OF.values()))
#: where a fake's fault control API lives (fake_providers' control contract)
CONTROL_PATH = "/_chaos"


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


def build_providers_config(agent: dict[str, Any], overrides: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """The fakes' config: the agent's scripted LLM, then the scenario's overrides. The LLM fallback (the
    Anthropic-style fake) speaks the same script as the OpenAI-style primary unless given its own, so a call that
    falls back still says what the dialog expects."""
    config = deep_merge(agent.get("providers") or {}, overrides)
    primary = config.get("openai") or {}
    shared = {key: primary[key] for key in ("script", "default_reply") if key in primary}
    config["anthropic"] = deep_merge(shared, config.get("anthropic") or {})
    config.setdefault("seed", seed)
    return config


def build_runtime_config(agent: dict[str, Any], overrides: dict[str, Any], *, urls: dict[str, str],
                         s3: dict[str, Any], capacity: int, spool_dir: str | None = None, host: str = "127.0.0.1",
                         port: int = 0, auth_token: str = AUTH_TOKEN) -> dict[str, Any]:
    """The reference runtime's config: every dependency at ``urls[name]`` (its proxy), the agent's dialog, then
    the scenario's overrides. Shared by the embedded stack and the docker-compose files (harness.compose)."""
    return deep_merge(
        {
            "host": host,
            "port": port,
            "capacity": capacity,
            "twilio": {"auth_token": auth_token},
            "providers": {
                "stt": {"kind": "deepgram", "base_url": urls["stt"]},
                "llm": {"kind": "openai", "base_url": urls["llm"]},
                "tts": {"kind": "elevenlabs", "base_url": urls["tts"]},
                # used when safeguards.providers is fixed; the broken runtime has one provider per role
                "fallbacks": {
                    "stt": [{"kind": "assemblyai", "base_url": urls["stt_fallback"]}],
                    "llm": [{"kind": "anthropic", "base_url": urls["llm_fallback"]}],
                    "tts": [{"kind": "deepgram", "base_url": urls["tts_fallback"]}],
                },
            },
            # the spool (safeguard 1, fixed) outlives a runtime: a restarted one uploads what its predecessor left
            "recording": {"s3": s3, **({"spool": {"dir": spool_dir}} if spool_dir else {})},
            # CRM, calendar and workflow calls: the fake CRM, through its proxy
            "workflow": {"url": f"{urls['crm']}/workflow/events"},
            "tools": {"url": f"{urls['crm']}/tools"},
        },
        deep_merge(agent.get("runtime") or {}, overrides),
    )


def _prepare_child() -> None:
    """Runs in each service's process before exec: a lower CPU priority (see STACK_NICENESS), and on Linux a
    SIGTERM when the harness dies, so that even a harness killed with SIGKILL leaves no service behind."""
    os.nice(STACK_NICENESS)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _rss_bytes(pid: int) -> int:
    """Resident set size from /proc (a read of kernel memory, it does not block); 0 when unknown."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedStack:
    def __init__(self, target: EmbeddedTarget, *, scenario_dir: Path, run_dir: Path, seed: int,
                 environ: Mapping[str, str] | None = None, allow_remote: bool = False,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.target = target
        self.agent_path = (scenario_dir / target.agent).resolve()
        self.dir = run_dir / "stack"
        self.seed = seed
        self.services: list[Service] = []
        self.environ = dict(os.environ if environ is None else environ)
        self.allow_remote = allow_remote
        self.toxiproxy: ToxiproxyClient | None = None
        self.storage: StorageEndpoint | None = None
        self.dependencies: dict[str, Dependency] = {}
        self.on_event = on_event or (lambda name, fields: None)
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        # proxies of this run only: a shared Toxiproxy server may hold other people's proxies
        self._proxy_prefix = f"voicechaos-{secrets.token_hex(3)}-"

    async def start(self) -> StackEndpoints:
        self.dir.mkdir(parents=True, exist_ok=True)
        agent = load_agent(self.agent_path)
        providers_config = build_providers_config(agent, self.target.providers, seed=self.seed)
        providers_file = self.dir / "providers.json"
        providers_file.write_text(json.dumps(providers_config, indent=2))
        fakes = await self._spawn(
            "fake_providers",
            [sys.executable, "-m", "fake_providers", "serve", "--host", "127.0.0.1", "--port", "0",
             *(arg for fake in FAKES for arg in ("--provider", fake)), "--config", str(providers_file)],
            expect=list(FAKES),
        )
        store = await self._spawn("storage", [sys.executable, *serve_argv()[1:]], expect=["storage"])
        self.storage = StorageEndpoint(url=store.urls["storage"])
        choice = choose_toxiproxy(self.environ)
        self.toxiproxy = await self._start_toxiproxy(choice)
        for name, fake in FAKE_OF.items():
            await self._add_dependency(name, fake, fakes.urls[fake], control=True)
        await self._add_dependency("storage", "storage", self.storage.url, control=False)
        deps = self.dependencies
        runtime_config = build_runtime_config(
            agent, self.target.runtime, urls={name: d.url for name, d in deps.items()},
            s3=self.storage.runtime_s3_config(url=deps["storage"].url), capacity=self.target.capacity,
            spool_dir=str(self.dir / "spool"))
        runtime_file = self.dir / "runtime.yaml"
        runtime_file.write_text(yaml.safe_dump(runtime_config, sort_keys=False))
        runtime_argv = [sys.executable, "-m", "reference_runtime", "serve", "--config", str(runtime_file)]
        runtime = await self._spawn("runtime", runtime_argv, expect=["runtime"])
        runtime_url = runtime.urls["runtime"]
        # restarts come back on the same port, as a pod behind a service keeps its address
        runtime_config["port"] = int(runtime_url.rsplit(":", 1)[1])
        runtime_file.write_text(yaml.safe_dump(runtime_config, sort_keys=False))
        self._supervisor = asyncio.create_task(self._supervise(runtime, runtime_argv))
        # the callers' side of the runtime: their media streams go through a proxy of their own (the runtime keeps
        # its port across restarts, so the proxy's upstream stays right)
        leg = await self._add_dependency("caller_leg", "runtime", runtime_url, control=False)
        return StackEndpoints(runtime_url=runtime_url, webhook_url=f"{runtime_url}/voice", auth_token=AUTH_TOKEN,
                              providers=dict(fakes.urls), toxiproxy_url=self.toxiproxy.url,
                              toxiproxy=choice.describe(), dependencies=dict(self.dependencies),
                              storage=self.storage, media_via=upstream_of(leg.url))

    async def _supervise(self, runtime: Service, argv: list[str]) -> None:
        """Restart the runtime when it exits during the run, as an orchestrator would: a drained runtime (the memory
        safeguard exits on purpose, after finishing its calls) and a crashed one alike. Crash loops are bounded."""
        current = runtime
        while True:
            oom = await self._watch_memory(current)
            code = await current.process.wait()
            if self._stopping:
                return
            self.on_event("runtime_exited", {"code": code, "restarts": self.restarts, "oom_killed": oom,
                                             "drained": code == RUNTIME_DRAINED_EXIT})
            if self.restarts >= MAX_RUNTIME_RESTARTS:
                self.on_event("runtime_not_restarted", {"reason": f"{MAX_RUNTIME_RESTARTS} restarts already"})
                return
            await asyncio.sleep(RESTART_DELAY_S)
            if self._stopping:
                return
            self.restarts += 1
            try:
                current = await self._spawn("runtime", argv, expect=["runtime"])
            except StackError as exc:
                self.on_event("runtime_not_restarted", {"reason": str(exc)[:500]})
                return
            self.on_event("runtime_restarted", {"restarts": self.restarts, "url": current.urls.get("runtime")})

    async def _watch_memory(self, service: Service) -> bool:
        """With ``memory_limit_mb``, act as a container's OOM killer: SIGKILL the runtime once its RSS passes the
        limit. Returns whether it did; returns as soon as the process exits either way."""
        process = service.process
        limit = self.target.memory_limit_mb
        if self.target.memory_headroom_mb is not None:
            started = _rss_bytes(process.pid) / 2**20
            limit = min(limit or float("inf"), started + self.target.memory_headroom_mb)
            self.on_event("runtime_memory_limit", {"limit_mb": round(limit, 1), "rss_at_start_mb": round(started, 1)})
        if limit is None:
            return False
        while process.returncode is None:
            rss = _rss_bytes(process.pid)
            if rss > limit * 2**20:
                self.on_event("runtime_oom_killed", {"rss_mb": round(rss / 2**20, 1), "limit_mb": round(limit, 1)})
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=OOM_POLL_S)
        return False

    async def _start_toxiproxy(self, choice: ToxiproxyChoice) -> ToxiproxyClient:
        if choice.kind == "external":
            assert choice.url is not None
            check_target(choice.url, allow_remote=self.allow_remote, what="TOXIPROXY_URL")
            client = ToxiproxyClient(choice.url)
        elif choice.kind == "binary":
            assert choice.binary is not None
            port = _free_port()
            await self._spawn("toxiproxy", [choice.binary, "-host", "127.0.0.1", "-port", str(port)], expect=[])
            client = ToxiproxyClient(f"http://127.0.0.1:{port}")
        else:
            service = await self._spawn(
                "toxiproxy", [sys.executable, "-m", "harness.chaos.toxiproxy", "--host", "127.0.0.1", "--port", "0"],
                expect=["toxiproxy"])
            client = ToxiproxyClient(service.urls["toxiproxy"])
        deadline = asyncio.get_running_loop().time() + _READY_TIMEOUT
        while True:
            try:
                await client.version()
                return client
            except ToxiproxyError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise StackError(f"{choice.describe()} does not answer: {exc}") from None
                await asyncio.sleep(0.1)

    async def _add_dependency(self, name: str, service: str, url: str, *, control: bool) -> Dependency:
        assert self.toxiproxy is not None
        try:
            proxy = await self.toxiproxy.create_proxy(self._proxy_prefix + name, upstream_of(url))
        except ToxiproxyError as exc:
            raise StackError(f"cannot put {name} ({service}) behind a proxy: {exc}") from None
        dependency = Dependency(name=name, service=service, upstream_url=url, proxy=proxy,
                                control_url=url.rstrip("/") + CONTROL_PATH if control else None)
        self.dependencies[name] = dependency
        return dependency

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
            # utime + stime; a restarted runtime adds up (a process that exited is gone from /proc: not counted)
            out[service.name] = round(out.get(service.name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks, 2)
        return out

    async def stop(self) -> None:
        """Remove this run's proxies, then SIGTERM every process we started (by PID), SIGKILL what is still running
        after a grace period."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.toxiproxy is not None:
            for dependency in self.dependencies.values():
                with contextlib.suppress(ToxiproxyError):
                    await self.toxiproxy.delete_proxy(dependency.proxy.name)
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
