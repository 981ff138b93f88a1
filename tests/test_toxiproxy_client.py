"""The harness's Toxiproxy client (toxiproxy-python with its gaps closed), against the embedded Toxiproxy server and
against servers that misbehave: every failure ends as a ToxiproxyError that names the server and the operation."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.chaos.toxiproxy import EmbeddedToxiproxy
from harness.chaos.toxiproxy_client import ToxicSpec, ToxiproxyClient, ToxiproxyError


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _round_trip(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"ping")
    await writer.drain()
    assert await reader.readexactly(4) == b"ping"
    elapsed = time.monotonic() - started
    writer.close()
    return elapsed


async def test_proxy_toxic_and_rollback_through_toxiproxy_python() -> None:
    upstream = await _echo_server()
    port = upstream.sockets[0].getsockname()[1]
    async with EmbeddedToxiproxy("127.0.0.1", 0) as server:
        client = ToxiproxyClient(server.url)
        assert "2.12.0" in await client.version()
        proxy = await client.create_proxy("vc-test-stt", f"127.0.0.1:{port}")
        assert proxy.listen.startswith("127.0.0.1:") and proxy.port > 0
        assert await _round_trip(proxy.port) < 0.2
        name = await client.add_toxic(proxy.name, ToxicSpec(type="latency", attributes={"latency": 300}))
        assert name == "latency_downstream" and await client.toxics(proxy.name) == [name]
        assert await _round_trip(proxy.port) >= 0.29
        await client.remove_toxic(proxy.name, name)
        assert await client.toxics(proxy.name) == []
        assert await _round_trip(proxy.port) < 0.2
        await client.set_enabled(proxy.name, False)
        with pytest.raises(OSError):
            await _round_trip(proxy.port)
        await client.set_enabled(proxy.name, True)
        assert await _round_trip(proxy.port) < 0.2
        await client.delete_proxy(proxy.name)
        await client.delete_proxy(proxy.name)  # missing_ok: a rollback may run twice
    upstream.close()


async def test_clear_errors_instead_of_the_librarys_raw_exceptions() -> None:
    async with EmbeddedToxiproxy("127.0.0.1", 0) as server:
        client = ToxiproxyClient(server.url)
        first = await client.create_proxy("vc-a", "127.0.0.1:9")
        # the library surfaces a port clash as KeyError('name'): here it names the cause
        with pytest.raises(ToxiproxyError, match=r"create proxy 'vc-b'.*address already in use"):
            await client.create_proxy("vc-b", "127.0.0.1:9", listen=first.listen)
        with pytest.raises(ToxiproxyError, match="already exists"):
            await client.create_proxy("vc-a", "127.0.0.1:9")
        with pytest.raises(ToxiproxyError, match="invalid toxic type"):
            await client.add_toxic("vc-a", ToxicSpec(type="earthquake"))
        with pytest.raises(ToxiproxyError, match="proxy not found"):
            await client.add_toxic("vc-missing", ToxicSpec(type="latency"))


async def test_unreachable_and_silent_servers_fail_fast_with_the_address() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    silent_port = listener.sockets[0].getsockname()[1]
    silent = ToxiproxyClient(f"http://127.0.0.1:{silent_port}", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ToxiproxyError, match=rf"127\.0\.0\.1:{silent_port}: version: no answer within 0\.5 s"):
        await silent.version()
    assert time.monotonic() - started < 3
    listener.close()
    closed = ToxiproxyClient(f"http://127.0.0.1:{silent_port}", timeout_s=2)
    with pytest.raises(ToxiproxyError, match="cannot connect"):
        await closed.version()


async def test_two_clients_of_two_servers_never_cross() -> None:
    async with EmbeddedToxiproxy("127.0.0.1", 0) as one, EmbeddedToxiproxy("127.0.0.1", 0) as two:
        a, b = ToxiproxyClient(one.url), ToxiproxyClient(two.url)
        await asyncio.gather(*(a.create_proxy(f"vc-one-{i}", "127.0.0.1:9") for i in range(5)),
                             *(b.create_proxy(f"vc-two-{i}", "127.0.0.1:9") for i in range(5)))
        assert sorted(one.collection.proxies) == [f"vc-one-{i}" for i in range(5)]
        assert sorted(two.collection.proxies) == [f"vc-two-{i}" for i in range(5)]
