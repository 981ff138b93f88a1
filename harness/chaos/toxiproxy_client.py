"""The harness's Toxiproxy client: ``toxiproxy-python`` (the standard Python client) with its known gaps closed.

Its gaps (``shared/protocols/toxiproxy.md``, "toxiproxy-python 0.1.1") and what this wrapper does about each:

- the server's host and port are class attributes of ``APIConsumer``, shared by the whole process: every operation
  sets them under one lock, so two clients of two servers never talk to the wrong one;
- ``requests`` is called without a timeout: each operation runs in a daemon thread and is given up after
  ``timeout_s`` with an error that names the server (a stuck request cannot hold the run, nor the process's exit);
- a refused proxy creation (HTTP 500, e.g. the listen port is taken) surfaces as ``KeyError('name')``: it becomes a
  :class:`ToxiproxyError` that says so, and the server's own message is fetched when it can be;
- any 409 is ``ProxyExists``, any 400 ``InvalidToxic``, 404 ``NotFound``, each carrying raw bytes: decoded into the
  server's ``error`` text;
- there is no toxic update and no ``/populate``: not needed here (a fault is added whole and removed whole).

The client is asyncio-facing (``await client.add_toxic(...)``); ``toxiproxy-python`` itself is synchronous.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

T = TypeVar("T")

# toxiproxy-python keeps the server address in class attributes; this lock makes "set address, call" atomic.
# It guards that library's process-wide state, so it is process-wide too.
_LIBRARY_LOCK = threading.Lock()


class ToxiproxyError(RuntimeError):
    """A Toxiproxy operation failed. The message names the server, the operation and the reason."""

    def __init__(self, url: str, operation: str, reason: str) -> None:
        super().__init__(f"Toxiproxy at {url}: {operation}: {reason}")
        self.url = url
        self.operation = operation
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    name: str
    listen: str
    """the address actually bound (``127.0.0.1:0`` comes back with its port)"""
    upstream: str
    enabled: bool = True

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class ToxicSpec:
    """One toxic, as the Toxiproxy API takes it (the fields ARE the JSON body)."""

    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def resolved_name(self) -> str:
        return self.name or f"{self.type}_{self.stream}"  # the server's default name


def _server_message(raw: Any) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
    try:
        return str(json.loads(text).get("error", text)).strip()
    except (ValueError, AttributeError):
        return text.strip()


class ToxiproxyClient:
    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if not parts.hostname or not parts.port:
            raise ValueError(f"Toxiproxy URL needs a host and a port, got {url!r}")
        self.url = f"http://{parts.hostname}:{parts.port}"
        self._host = parts.hostname
        self._port = parts.port
        self.timeout_s = timeout_s

    # --- operations ------------------------------------------------------------------------------------------------

    async def version(self) -> str:
        def call() -> str:
            # the thread ends a little after we have given up on it (below), never hangs for ever
            return APIConsumer.get("/version", timeout=self.timeout_s + 1).content.decode().strip()

        return await self._run("version", call)

    async def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> ProxyInfo:
        def call() -> ProxyInfo:
            try:
                proxy = Toxiproxy().create(upstream=upstream, name=name, listen=listen)
            except KeyError:
                # the library read a 500 as a proxy and failed on its missing 'name': ask the server why
                reason = self._why_create_failed(name, upstream, listen)
                raise ToxiproxyError(self.url, f"create proxy {name!r} listening on {listen}", reason) from None
            return ProxyInfo(name=proxy.name, listen=proxy.listen, upstream=proxy.upstream,
                             enabled=bool(proxy.enabled))

        return await self._run(f"create proxy {name!r}", call)

    async def delete_proxy(self, name: str, *, missing_ok: bool = True) -> None:
        def call() -> None:
            proxy = Toxiproxy().get_proxy(name)
            if proxy is None:
                if missing_ok:
                    return
                raise NotFound(b'{"error":"proxy not found"}')
            proxy.destroy()

        await self._run(f"delete proxy {name!r}", call)

    async def add_toxic(self, proxy_name: str, toxic: ToxicSpec) -> str:
        def call() -> str:
            proxy = self._proxy(proxy_name)
            proxy.add_toxic(type=toxic.type, stream=toxic.stream, name=toxic.resolved_name,
                            toxicity=toxic.toxicity, attributes=dict(toxic.attributes))
            return toxic.resolved_name

        return await self._run(f"add {toxic.type} toxic to proxy {proxy_name!r}", call)

    async def remove_toxic(self, proxy_name: str, toxic_name: str) -> None:
        def call() -> None:
            self._proxy(proxy_name).destroy_toxic(toxic_name)

        await self._run(f"remove toxic {toxic_name!r} from proxy {proxy_name!r}", call)

    async def set_enabled(self, proxy_name: str, enabled: bool) -> None:
        def call() -> None:
            proxy = self._proxy(proxy_name)
            proxy.enable() if enabled else proxy.disable()

        await self._run(f"{'enable' if enabled else 'disable'} proxy {proxy_name!r}", call)

    async def toxics(self, proxy_name: str) -> list[str]:
        def call() -> list[str]:
            return list(self._proxy(proxy_name).toxics())

        return await self._run(f"list toxics of proxy {proxy_name!r}", call)

    # --- internals -------------------------------------------------------------------------------------------------

    def _proxy(self, name: str) -> Any:
        proxy = Toxiproxy().get_proxy(name)
        if proxy is None:
            raise NotFound(b'{"error":"proxy not found"}')
        return proxy

    def _why_create_failed(self, name: str, upstream: str, listen: str) -> str:
        try:
            response = requests.post(f"{self.url}/proxies", json={"name": name, "upstream": upstream,
                                                                   "listen": listen}, timeout=self.timeout_s)
            message = _server_message(response.content)
            return f"refused with HTTP {response.status_code}: {message}"
        except requests.RequestException as exc:
            return f"refused, and asking why failed too ({exc})"

    async def _run(self, operation: str, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return  # given up already (timeout or cancellation)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def worker() -> None:
            result: T | None = None
            error: BaseException | None = None
            try:
                with _LIBRARY_LOCK:
                    # requests has no default timeout: bind one to this thread's calls through the class methods
                    APIConsumer.host, APIConsumer.port = self._host, self._port
                    result = call()
            except ToxiproxyError as exc:
                error = exc
            except ProxyExists as exc:
                error = ToxiproxyError(self.url, operation, _server_message(exc.args[0] if exc.args else b""))
            except (InvalidToxic, NotFound) as exc:
                error = ToxiproxyError(self.url, operation, _server_message(exc.args[0] if exc.args else b""))
            except requests.Timeout:
                error = ToxiproxyError(self.url, operation, f"no answer within {self.timeout_s:g} s")
            except requests.ConnectionError as exc:
                error = ToxiproxyError(self.url, operation, f"cannot connect ({exc.__class__.__name__})")
            except requests.RequestException as exc:
                error = ToxiproxyError(self.url, operation, str(exc))
            except Exception as exc:  # a library bug must still end as a named error, not a hang
                error = ToxiproxyError(self.url, operation, f"{exc.__class__.__name__}: {exc}")
            with contextlib.suppress(RuntimeError):  # the loop closed while we waited: nobody is listening
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=worker, name=f"toxiproxy {operation}", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            raise ToxiproxyError(self.url, operation, f"no answer within {self.timeout_s:g} s") from None
