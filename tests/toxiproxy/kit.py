"""Test kit for the embedded Toxiproxy: a real upstream TCP server on loopback, an API helper, timed reads.

Timing assertions use generous margins (a delay of 200 ms is checked as >= 190 ms and < 600 ms): the suite runs on
a noisy 2-core machine and must not flake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

TIMEOUT = 5.0


class Upstream:
    """A TCP server on 127.0.0.1 for proxies to relay to.

    ``echo=True``: every connection echoes what it reads. ``echo=False``: each accepted connection is handed to the
    test through :meth:`accepted`, so the test plays the server side itself.
    """

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.port = 0
        self.connections = 0
        self._accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if not self.echo:
            await self._accepted.put((reader, writer))
            return
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def accepted(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self._accepted.get(), TIMEOUT)


class Api:
    """The Toxiproxy API over aiohttp, for tests: thin, returns parsed JSON and raises on unexpected statuses."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        async with self.session.request(method, self.url + path, data=data, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        status, _, payload = await self.request(method, path, body)
        assert status == expect, (status, payload)
        return json.loads(payload) if payload else None

    async def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0", **more: Any) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, **more}
        return await self.call("POST", "/proxies", body, expect=201)

    async def add_toxic(
        self, proxy: str, type: str, attributes: dict[str, Any] | None = None, stream: str = "downstream", **more: Any
    ) -> dict[str, Any]:
        body = {"type": type, "stream": stream, "attributes": attributes or {}, **more}
        return await self.call("POST", f"/proxies/{proxy}/toxics", body)

    async def update_toxic(self, proxy: str, toxic: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PATCH", f"/proxies/{proxy}/toxics/{toxic}", body)

    async def delete_toxic(self, proxy: str, toxic: str) -> None:
        await self.call("DELETE", f"/proxies/{proxy}/toxics/{toxic}", expect=204)

    async def update_proxy(self, proxy: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PATCH", f"/proxies/{proxy}", body)


def port_of(proxy: dict[str, Any]) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = TIMEOUT) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


async def read_to_end(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """Everything until EOF (raises ConnectionResetError on an RST, TimeoutError if it never ends)."""
    return await asyncio.wait_for(reader.read(-1), timeout)


async def stays_open(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if nothing at all (no byte, no EOF, no reset) arrives for ``seconds``."""
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


@contextlib.asynccontextmanager
async def client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await connect(port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()
