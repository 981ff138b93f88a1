"""The embedded server through the official Python client, ``toxiproxy-python`` 0.1.1 (import name ``toxiproxy``).

The client is synchronous (``requests``) and keeps the server's host and port as process-global class attributes:
every call runs in a thread (the server runs on this test's loop), and the attributes are restored afterwards.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.chaos.toxiproxy import EmbeddedToxiproxy
from tests.toxiproxy.kit import Stopwatch, Upstream, client, connect, read_exactly, read_to_end

T = TypeVar("T")


async def sync(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


@pytest.fixture
async def official(tp: EmbeddedToxiproxy) -> AsyncIterator[Toxiproxy]:
    saved = (APIConsumer.host, APIConsumer.port)
    server = Toxiproxy()
    server.update_api_consumer(tp.host, tp.port)
    try:
        yield server
    finally:
        APIConsumer.host, APIConsumer.port = saved


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def port(proxy: Any) -> int:
    return int(proxy.listen.rsplit(":", 1)[1])


async def test_running_and_version(official: Toxiproxy) -> None:
    assert await sync(official.running) is True
    assert await sync(official.version) == b'{"version": "2.12.0"}\n'


async def test_create_get_list_destroy(official: Toxiproxy, echo: Upstream) -> None:
    proxy = await sync(lambda: official.create(upstream=echo.address, name="voice"))
    assert proxy.name == "voice" and proxy.upstream == echo.address and proxy.enabled is True
    assert proxy.listen.startswith("127.0.0.1:") and port(proxy) != 0
    assert set(await sync(official.proxies)) == {"voice"}
    assert (await sync(lambda: official.get_proxy("voice"))).listen == proxy.listen
    assert await sync(lambda: official.get_proxy("nope")) is None
    async with client(port(proxy)) as (reader, writer):
        writer.write(b"hi")
        assert await read_exactly(reader, 2) == b"hi"
    assert await sync(lambda: official.destroy(proxy)) is True
    assert await sync(official.proxies) == {}


async def test_create_errors_as_the_client_surfaces_them(official: Toxiproxy, echo: Upstream, busy_port: int) -> None:
    await sync(lambda: official.create(upstream=echo.address, name="voice"))
    with pytest.raises(ProxyExists):
        await sync(lambda: official.create(upstream=echo.address, name="voice"))
    with pytest.raises(KeyError, match="name"):  # a 500 (port clash) surfaces as KeyError('name')
        await sync(lambda: official.create(upstream=echo.address, name="clash", listen=f"127.0.0.1:{busy_port}"))


async def test_populate_destroy_all_and_reset(official: Toxiproxy, echo: Upstream) -> None:
    created = await sync(
        lambda: official.populate(
            [
                {"name": "a", "upstream": echo.address, "listen": "127.0.0.1:0"},
                {"name": "b", "upstream": echo.address, "listen": "127.0.0.1:0"},
            ]
        )
    )
    assert [p.name for p in created] == ["a", "b"]
    proxy_a = await sync(lambda: official.get_proxy("a"))
    await sync(lambda: proxy_a.add_toxic(type="latency", attributes={"latency": 10}))
    await sync(proxy_a.disable)
    assert await sync(official.reset) is True
    after = await sync(lambda: official.get_proxy("a"))
    assert after.enabled is True and await sync(after.toxics) == {}
    await sync(official.destroy_all)
    assert await sync(official.proxies) == {}


async def test_toxics_add_list_get_destroy(official: Toxiproxy, echo: Upstream) -> None:
    proxy = await sync(lambda: official.create(upstream=echo.address, name="voice"))
    assert await sync(lambda: proxy.add_toxic(type="latency", attributes={"latency": 200})) is None
    await sync(
        lambda: proxy.add_toxic(
            type="bandwidth", stream="upstream", name="slow", toxicity=0.5, attributes={"rate": 1000}
        )
    )
    toxics = await sync(proxy.toxics)
    assert list(toxics) == ["slow", "latency_downstream"]
    latency = toxics["latency_downstream"]
    assert (latency.type, latency.stream, latency.toxicity, latency.attributes) == (
        "latency",
        "downstream",
        1,
        {"latency": 200, "jitter": 0},
    )
    assert (await sync(lambda: proxy.get_toxic("slow"))).attributes == {"rate": 1000}
    assert await sync(lambda: proxy.get_toxic("nope")) is None
    async with client(port(proxy)) as (reader, writer):
        watch = Stopwatch()
        writer.write(b"late")
        assert await read_exactly(reader, 4) == b"late"
        assert 0.19 <= watch.elapsed() < 0.6
    assert await sync(lambda: proxy.destroy_toxic("latency_downstream")) is True
    assert list(await sync(proxy.toxics)) == ["slow"]


async def test_toxic_errors_as_the_client_surfaces_them(official: Toxiproxy, echo: Upstream) -> None:
    proxy = await sync(lambda: official.create(upstream=echo.address, name="voice"))
    await sync(lambda: proxy.add_toxic(type="latency"))
    with pytest.raises(ProxyExists):  # any 409
        await sync(lambda: proxy.add_toxic(type="latency"))
    with pytest.raises(InvalidToxic):  # any 400
        await sync(lambda: proxy.add_toxic(type="no_such_type"))
    with pytest.raises(InvalidToxic):
        await sync(lambda: proxy.add_toxic(type="latency", stream="sideways", name="x"))
    with pytest.raises(NotFound):
        await sync(lambda: proxy.destroy_toxic("nope"))


async def test_down_takes_the_proxy_down_and_brings_it_back(official: Toxiproxy, echo: Upstream) -> None:
    proxy = await sync(lambda: official.create(upstream=echo.address, name="voice"))
    reader, writer = await connect(port(proxy))
    try:
        context = proxy.down()
        await sync(context.__enter__)
        assert await read_to_end(reader) == b""  # the live connection was closed
        with pytest.raises(ConnectionRefusedError):
            await connect(port(proxy))
        await sync(lambda: context.__exit__(None, None, None))
    finally:
        writer.transport.abort()
    async with client(port(proxy)) as (reader, writer):  # the same port again
        writer.write(b"up")
        assert await read_exactly(reader, 2) == b"up"
