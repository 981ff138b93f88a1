"""latency: each chunk delayed latency ± jitter from when it was read; pipelined; removal delivers held data."""

from __future__ import annotations

import asyncio
from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, Latency
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of, read_exactly, read_to_end


def test_core_delays_each_chunk_from_when_it_was_read() -> None:
    state = Latency(latency=200).start(0.0, Random(1))
    state.receive(Chunk(b"a", 0.0), 0.0)
    state.receive(Chunk(b"b", 0.05), 0.05)
    assert state.pull(0.199) == []
    assert state.deadline() == 0.2
    assert state.pull(0.2) == [Chunk(b"a", 0.2)]
    assert state.pull(0.25) == [Chunk(b"b", 0.25)]  # pipelined: 200 ms after its own read, not after "a" left


def test_core_jitter_never_reorders_and_stays_in_range() -> None:
    state = Latency(latency=100, jitter=50).start(0.0, Random(3))
    for i in range(50):
        state.receive(Chunk(bytes([i]), i * 0.001), i * 0.001)
    out: list[Chunk] = []
    now = 0.0
    while len(out) < 50:
        now += 0.001
        out += [item for item in state.pull(now) if isinstance(item, Chunk)]
    assert [c.data[0] for c in out] == list(range(50))
    assert all(0.049 <= c.at - i * 0.001 <= 0.151 for i, c in enumerate(out))


def test_core_end_follows_the_last_chunk_and_removal_delivers_at_once() -> None:
    state = Latency(latency=1000).start(0.0, Random(1))
    state.receive(Chunk(b"held", 0.0), 0.0)
    state.receive(END, 0.1)
    assert state.pull(0.5) == []
    assert state.held_bytes() == 4
    assert state.removed() == [Chunk(b"held", 0.0), END]


async def test_downstream_latency_delays_the_echo(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "latency", {"latency": 200})
    async with client(port) as (reader, writer):
        watch = Stopwatch()
        writer.write(b"ping")
        assert await read_exactly(reader, 4) == b"ping"
        assert 0.19 <= watch.elapsed() < 0.6


async def test_upstream_latency_delays_what_the_server_gets(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "latency", {"latency": 200}, stream="upstream")
    async with client(port) as (_, writer):
        upstream_reader, _ = await server.accepted()
        watch = Stopwatch()
        writer.write(b"hello")
        assert await read_exactly(upstream_reader, 5) == b"hello"
        assert 0.19 <= watch.elapsed() < 0.6


async def test_latency_is_pipelined_not_serialised(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "latency", {"latency": 300})
    async with client(port) as (reader, writer):
        watch = Stopwatch()
        for i in range(10):  # 10 messages 20 ms apart: pipelined they all arrive by ~0.5 s, serialised by 3 s
            writer.write(b"%d" % i)
            await asyncio.sleep(0.02)
        got = await read_exactly(reader, 10, timeout=3)
        assert got == b"0123456789"
        assert 0.29 <= watch.elapsed() < 1.2


async def test_deleting_the_toxic_delivers_held_data_at_once(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "latency", {"latency": 5000})
    async with client(port) as (reader, writer):
        writer.write(b"held")
        await asyncio.sleep(0.2)
        watch = Stopwatch()
        await api.delete_toxic("p", "latency_downstream")
        assert await read_exactly(reader, 4, timeout=2) == b"held"
        assert watch.elapsed() < 1.0


async def test_held_data_arrives_before_the_close(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "latency", {"latency": 200})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        upstream_writer.write(b"last words")
        upstream_writer.close()
        assert await read_to_end(reader) == b"last words"
        assert watch.elapsed() >= 0.19
