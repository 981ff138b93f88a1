"""The TCP proxy around the toxics: relaying, closing, refusing upstreams, disabling, toxicity, live changes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, connect, port_of, read_exactly, read_to_end


async def closed(reader: asyncio.StreamReader) -> bool:
    """The connection ended without data: EOF, or an RST (a socket closed with unread bytes is reset by the kernel)."""
    try:
        return await read_to_end(reader, timeout=3) == b""
    except ConnectionResetError:
        return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_relays_a_megabyte_both_ways_intact(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    payload = bytes(range(256)) * 4096
    async with client(port) as (reader, writer):
        writer.write(payload)
        assert await read_exactly(reader, len(payload)) == payload


async def test_many_concurrent_connections(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))

    async def one(i: int) -> bytes:
        async with client(port) as (reader, writer):
            writer.write(b"%05d" % i)
            return await read_exactly(reader, 5)

    assert await asyncio.gather(*(one(i) for i in range(100))) == [b"%05d" % i for i in range(100)]


async def test_the_clients_eof_closes_both_sides(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    async with client(port) as (reader, writer):
        upstream_reader, upstream_writer = await server.accepted()
        writer.write_eof()  # half-close is not propagated: the server sees the end, and so does the client
        assert await read_to_end(upstream_reader) == b""
        upstream_writer.write(b"too late")
        assert await read_to_end(reader) == b""


async def test_the_servers_close_closes_the_client(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        upstream_writer.write(b"goodbye")
        upstream_writer.close()
        assert await read_to_end(reader) == b"goodbye"


async def test_a_refusing_upstream_means_accepted_then_closed(api: Api) -> None:
    port = port_of(await api.create_proxy("p", f"127.0.0.1:{closed_port()}"))
    async with client(port) as (reader, _):
        assert await closed(reader)


async def test_disabling_closes_live_connections_and_refuses_new_ones(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "latency", {"latency": 10_000})
    async with client(port) as (reader, writer):
        writer.write(b"held by latency")
        await api.update_proxy("p", {"enabled": False})
        assert await closed(reader)
    with pytest.raises(ConnectionRefusedError):
        await connect(port)


async def test_deleting_the_proxy_frees_its_port(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.call("DELETE", "/proxies/p", expect=204)
    again = await api.create_proxy("q", echo.address, listen=f"127.0.0.1:{port}")
    assert port_of(again) == port


async def test_changing_the_upstream_moves_new_connections(api: Api, echo: Upstream, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    async with client(port) as (reader, _):
        await api.update_proxy("p", {"upstream": server.address})
        assert await closed(reader)  # the old connection was closed
    async with client(port) as (_, writer):
        upstream_reader, _ = await server.accepted()
        writer.write(b"new")
        assert await read_exactly(upstream_reader, 3) == b"new"


async def test_toxicity_zero_never_applies_and_an_update_redraws(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "latency", {"latency": 300}, toxicity=0.0)
    async with client(port) as (reader, writer):
        watch = Stopwatch()
        writer.write(b"a")
        await read_exactly(reader, 1)
        assert watch.elapsed() < 0.2
        await api.update_toxic("p", "latency_downstream", {"toxicity": 1.0})  # drawn again, on the live connection
        watch = Stopwatch()
        writer.write(b"b")
        await read_exactly(reader, 1)
        assert 0.29 <= watch.elapsed() < 0.9


async def test_toxics_chain_in_insertion_order(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "latency", {"latency": 200}, name="first")
    await api.add_toxic("p", "limit_data", {"bytes": 3}, name="second")
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        upstream_writer.write(b"abcdef")
        assert await read_to_end(reader) == b"abc"
        assert watch.elapsed() >= 0.19


async def test_a_toxic_added_to_a_live_connection_applies_at_once(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    async with client(port) as (reader, writer):
        writer.write(b"fast")
        await read_exactly(reader, 4)
        await api.add_toxic("p", "latency", {"latency": 250})
        watch = Stopwatch()
        writer.write(b"slow")
        await read_exactly(reader, 4)
        assert 0.24 <= watch.elapsed() < 0.9
        await api.delete_toxic("p", "latency_downstream")
        watch = Stopwatch()
        writer.write(b"fast")
        await read_exactly(reader, 4)
        assert watch.elapsed() < 0.2


async def downstream_received(api: Api) -> int:
    _, _, body = await api.request("GET", "/metrics")
    return next(
        int(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith('toxiproxy_proxy_received_bytes_total{direction="downstream"')
    )


async def test_a_stalled_chain_stops_reading_its_source(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "bandwidth", {"rate": 0})
    async with client(port):
        _, upstream_writer = await server.accepted()
        upstream_writer.write(b"x" * (32 * 1024 * 1024))  # far more than the chain may hold
        previous, received = -1, 0
        for _ in range(50):  # until the count stops moving
            received = await downstream_received(api)
            if received == previous and received > 0:
                break
            previous = received
            await asyncio.sleep(0.1)
        assert 0 < received < 20 * 1024 * 1024  # back-pressure: the proxy stopped reading at its high-water mark
