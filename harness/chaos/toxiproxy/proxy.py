"""Proxies and the collection of them: what the API's endpoints do, independent of HTTP.

A :class:`Proxy` owns its listener, its live :class:`~harness.chaos.toxiproxy.link.Link` s and its toxics (one
ordered list per direction). Toxic changes are applied to every live link at once, as Toxiproxy's
``toxic_collection.go`` does. The :class:`ProxyCollection` serialises every change with one lock (the real server's
mutexes), so two API calls never interleave half-way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Iterable
from random import Random

from harness.chaos.toxiproxy.link import Counters, Link, LinkFactory, ReadBuffer
from harness.chaos.toxiproxy.toxics.base import ToxicRegistry
from harness.chaos.toxiproxy.wire import (
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_NOT_FOUND,
    ApiError,
    ProxyInput,
    Stream,
    ToxicSpec,
    format_host_port,
    parse_upstream,
    resolve_listen,
    same_listen,
)
from harness.clock import Clock

LISTEN_BACKLOG = 1024


def _bind(host: str, port: int) -> socket.socket:
    """Bind and listen, or raise :class:`ApiError` 500 with Go's message (``listen tcp ...: bind: ...``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go does on Linux
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use"
        raise ApiError(f"listen tcp {format_host_port(host, port)}: bind: {reason}", 500) from None
    return sock


class Proxy:
    """One proxy: ``listen`` -> ``upstream``, enabled or not, with its toxics and live connections."""

    def __init__(self, name: str, listen: str, upstream: str, *, clock: Clock, rng: Random, allow_remote: bool) -> None:
        self.name = name
        self.listen = listen  # as bound once started ("127.0.0.1:0" -> "127.0.0.1:35925")
        self.upstream = upstream
        self.enabled = False
        self.clock = clock
        self.rng = rng
        self.allow_remote = allow_remote
        self.toxics: dict[Stream, list[ToxicSpec]] = {Stream.UPSTREAM: [], Stream.DOWNSTREAM: []}
        self.links: set[Link] = set()
        self.stats: dict[Stream, Counters] = {Stream.UPSTREAM: Counters(), Stream.DOWNSTREAM: Counters()}
        self.connections_total = 0
        self.read_buffer = ReadBuffer()
        self._server: asyncio.Server | None = None
        self._upstream_address = parse_upstream(upstream)

    # --- what links ask (LinkHost) ------------------------------------------------------------------------------------

    def toxic_specs(self, stream: Stream) -> list[ToxicSpec]:
        return list(self.toxics[stream])

    def counters(self, stream: Stream) -> Counters:
        return self.stats[stream]

    def upstream_address(self) -> tuple[str, int] | None:
        return self._upstream_address

    def link_closed(self, link: Link) -> None:
        self.links.discard(link)

    def _link_opened(self, link: Link) -> None:
        self.links.add(link)
        self.connections_total += 1

    # --- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``listen`` (kept as bound, so disable then enable keeps the port). Already enabled: nothing."""
        if self.enabled:
            return
        host, port = resolve_listen(self.listen, allow_remote=self.allow_remote)
        sock = _bind(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(LinkFactory(self, self._link_opened), sock=sock)
        except BaseException:
            sock.close()
            raise
        self.listen = format_host_port(bound_host, bound_port)
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and every live connection (Go's ``stop``). Already disabled: nothing."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.abort()
        self.links.clear()

    async def update(self, wanted: ProxyInput) -> None:
        """Go's ``Proxy.Update``: a new listen or upstream restarts the proxy; then ``enabled`` is applied.

        A listen that cannot be bound answers 500 and leaves the proxy disabled with that address stored.
        """
        if wanted.listen != self.listen or wanted.upstream != self.upstream:
            self.stop()
            self.listen = wanted.listen
            self.upstream = wanted.upstream
            self._upstream_address = parse_upstream(wanted.upstream)
        if wanted.enabled != self.enabled:
            if wanted.enabled:
                await self.start()
            else:
                self.stop()

    # --- toxics ----------------------------------------------------------------------------------------------------

    def all_toxics(self) -> list[ToxicSpec]:
        """Upstream toxics first, then downstream, each in insertion order."""
        return [*self.toxics[Stream.UPSTREAM], *self.toxics[Stream.DOWNSTREAM]]

    def find_toxic(self, name: str) -> ToxicSpec | None:
        for spec in self.all_toxics():
            if spec.name == name:
                return spec
        return None

    def add_toxic(self, spec: ToxicSpec) -> None:
        self.toxics[spec.direction].append(spec)
        for link in list(self.links):
            link.add_toxic(spec)

    def update_toxic(self, spec: ToxicSpec) -> None:
        chain = self.toxics[spec.direction]
        for i, existing in enumerate(chain):
            if existing.name == spec.name:
                chain[i] = spec
        for link in list(self.links):
            link.update_toxic(spec)

    def remove_toxic(self, name: str) -> None:
        spec = self.find_toxic(name)
        if spec is None:
            raise TOXIC_NOT_FOUND
        self.toxics[spec.direction].remove(spec)
        for link in list(self.links):
            link.remove_toxic(spec)

    def remove_all_toxics(self) -> None:
        for spec in self.all_toxics():
            self.remove_toxic(spec.name)


class ProxyCollection:
    """Every proxy by name; the endpoints' operations, each under one lock."""

    def __init__(self, registry: ToxicRegistry, *, clock: Clock, rng: Random, allow_remote: bool) -> None:
        self.registry = registry
        self.clock = clock
        self.rng = rng
        self.allow_remote = allow_remote
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def new_proxy(self, wanted: ProxyInput) -> Proxy:
        return Proxy(
            wanted.name, wanted.listen, wanted.upstream, clock=self.clock, rng=self.rng, allow_remote=self.allow_remote
        )

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    async def create(self, wanted: ProxyInput) -> Proxy:
        async with self.lock:
            if wanted.name in self.proxies:
                raise PROXY_EXISTS
            proxy = self.new_proxy(wanted)
            if wanted.enabled:
                await proxy.start()
            self.proxies[proxy.name] = proxy
            return proxy

    async def populate(self, wanted: Iterable[ProxyInput]) -> list[Proxy]:
        """Create or replace each proxy in turn; one whose ``listen`` and ``upstream`` are unchanged is kept as it is.

        A failure part-way raises, and the proxies already created stay (the real server's behaviour).
        """
        async with self.lock:
            wanted = list(wanted)
            for item in wanted:  # addresses checked before anything changes
                if item.enabled:
                    resolve_listen(item.listen, allow_remote=self.allow_remote)
            result: list[Proxy] = []
            for item in wanted:
                existing = self.proxies.get(item.name)
                if existing is not None:
                    if existing.upstream == item.upstream and same_listen(existing.listen, item.listen):
                        result.append(existing)
                        continue
                    existing.stop()
                proxy = self.new_proxy(item)
                if item.enabled:
                    await proxy.start()
                self.proxies[proxy.name] = proxy
                result.append(proxy)
            return result

    async def update(self, name: str, wanted: ProxyInput) -> Proxy:
        async with self.lock:
            proxy = self.get(name)
            await proxy.update(wanted)
            return proxy

    async def delete(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            proxy.stop()
            del self.proxies[name]

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed; live connections stay (unless a removed toxic closes them)."""
        async with self.lock:
            for proxy in list(self.proxies.values()):
                await proxy.start()
                proxy.remove_all_toxics()

    async def add_toxic(self, proxy_name: str, spec_of: Callable[[Proxy], ToxicSpec]) -> ToxicSpec:
        async with self.lock:
            proxy = self.get(proxy_name)
            spec = spec_of(proxy)
            proxy.add_toxic(spec)
            return spec

    async def update_toxic(
        self, proxy_name: str, toxic_name: str, spec_of: Callable[[ToxicSpec], ToxicSpec]
    ) -> ToxicSpec:
        async with self.lock:
            proxy = self.get(proxy_name)
            current = proxy.find_toxic(toxic_name)
            if current is None:
                raise TOXIC_NOT_FOUND
            spec = spec_of(current)
            proxy.update_toxic(spec)
            return spec

    async def remove_toxic(self, proxy_name: str, toxic_name: str) -> None:
        async with self.lock:
            self.get(proxy_name).remove_toxic(toxic_name)

    async def close(self) -> None:
        async with self.lock:
            for proxy in self.proxies.values():
                proxy.stop()
            self.proxies.clear()
