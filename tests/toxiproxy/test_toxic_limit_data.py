"""limit_data: the connection closes after ``bytes`` bytes in that direction; 0 closes on the first data."""

from __future__ import annotations

from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, LimitData
from tests.toxiproxy.kit import Api, Upstream, client, port_of, read_to_end, stays_open


def test_core_cuts_at_the_limit_then_ends() -> None:
    state = LimitData(bytes=10).start(0.0, Random(0))
    state.receive(Chunk(b"abcdef", 0.0), 0.0)
    assert state.pull(0.0) == [Chunk(b"abcdef", 0.0)]
    state.receive(Chunk(b"ghijkl", 0.1), 0.1)
    assert state.pull(0.1) == [Chunk(b"ghij", 0.1), END]


def test_core_zero_ends_on_the_first_data_without_delivering_it() -> None:
    state = LimitData(bytes=0).start(0.0, Random(0))
    assert state.pull(10.0) == []
    state.receive(Chunk(b"x", 10.0), 10.0)
    assert state.pull(10.0) == [END]


def test_core_the_count_survives_an_update() -> None:
    old = LimitData(bytes=10).start(0.0, Random(0))
    old.receive(Chunk(b"12345678", 0.0), 0.0)
    new = LimitData(bytes=12).start(0.0, Random(0))
    new.carry_from(old)
    new.receive(Chunk(b"abcdef", 0.0), 0.0)
    assert new.pull(0.0) == [Chunk(b"abcd", 0.0), END]


async def test_downstream_closes_after_the_limit(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "limit_data", {"bytes": 10})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        upstream_writer.write(b"123456")
        upstream_writer.write(b"789abc")
        assert await read_to_end(reader) == b"123456789a"


async def test_upstream_limit_closes_both_sides(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "limit_data", {"bytes": 5}, stream="upstream")
    async with client(port) as (reader, writer):
        upstream_reader, _ = await server.accepted()
        writer.write(b"0123456789")
        assert await read_to_end(upstream_reader) == b"01234"
        assert await read_to_end(reader) == b""


async def test_zero_bytes_keeps_the_connection_until_data_arrives(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "limit_data", {"bytes": 0})
    async with client(port) as (reader, writer):
        assert await stays_open(reader, 0.3)
        writer.write(b"x")
        assert await read_to_end(reader) == b""
