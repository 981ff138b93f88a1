"""timeout: data dropped; inactivity timer from the start, restarted by data, closes; 0 never; removal closes."""

from __future__ import annotations

import asyncio
from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, Timeout
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of, read_to_end, stays_open


def test_core_is_an_inactivity_timer_that_drops_data() -> None:
    state = Timeout(timeout=500).start(0.0, Random(0))
    assert state.deadline() == 0.5
    state.receive(Chunk(b"dropped", 0.2), 0.2)
    assert state.pull(0.2) == []
    assert state.deadline() == 0.7  # restarted by the data: 500 with data at 200 closes at 700
    assert state.pull(0.69) == []
    assert state.pull(0.7) == [END]


def test_core_zero_never_closes_but_the_end_of_stream_does() -> None:
    state = Timeout(timeout=0).start(0.0, Random(0))
    state.receive(Chunk(b"x", 1.0), 1.0)
    assert state.deadline() is None
    assert state.pull(1e9) == []
    state.receive(END, 2.0)
    assert state.pull(2.0) == [END]


def test_core_removal_closes_and_update_does_not() -> None:
    assert Timeout(timeout=0).start(0.0, Random(0)).removed() == [END]
    assert Timeout(timeout=0).start(0.0, Random(0)).flush() == []


async def test_closes_after_the_timeout_restarted_by_data(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "timeout", {"timeout": 500})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        await asyncio.sleep(0.2)
        upstream_writer.write(b"never delivered")
        assert await read_to_end(reader, timeout=3) == b""  # dropped, then closed
        assert 0.62 <= watch.elapsed() < 1.5


async def test_timeout_zero_drops_data_and_holds_the_connection_open(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "timeout", {"timeout": 0})
    async with client(port) as (reader, writer):
        writer.write(b"echoed but dropped")
        assert await stays_open(reader, 0.4)


async def test_removing_the_toxic_closes_the_connections_it_held(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "timeout", {"timeout": 0})
    async with client(port) as (reader, writer):
        writer.write(b"dropped")
        assert await stays_open(reader, 0.2)
        watch = Stopwatch()
        await api.delete_toxic("p", "timeout_downstream")
        assert await read_to_end(reader, timeout=2) == b""
        assert watch.elapsed() < 1.0


async def test_upstream_timeout_keeps_data_from_the_server(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "timeout", {"timeout": 300}, stream="upstream")
    async with client(port) as (reader, writer):
        upstream_reader, _ = await server.accepted()
        writer.write(b"lost")
        assert await read_to_end(upstream_reader, timeout=3) == b""
        assert await read_to_end(reader, timeout=3) == b""
