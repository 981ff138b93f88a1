"""slow_close: data passes at once; the close is held back ``delay`` ms after the end of the stream."""

from __future__ import annotations

from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, SlowClose
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of, read_exactly, read_to_end


def test_core_data_passes_and_the_end_waits() -> None:
    state = SlowClose(delay=300).start(0.0, Random(0))
    state.receive(Chunk(b"bye", 1.0), 1.0)
    assert state.pull(1.0) == [Chunk(b"bye", 1.0)]
    state.receive(END, 1.0)
    assert state.pull(1.29) == []
    assert state.pull(1.3) == [END]


def test_core_removal_lets_a_held_close_through() -> None:
    state = SlowClose(delay=10_000).start(0.0, Random(0))
    state.receive(END, 0.0)
    assert state.removed() == [END]


async def test_the_close_arrives_late_and_the_data_on_time(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "slow_close", {"delay": 300})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        upstream_writer.write(b"bye")
        upstream_writer.close()
        assert await read_exactly(reader, 3) == b"bye"
        data_at = watch.elapsed()
        assert await read_to_end(reader) == b""
        assert data_at < 0.25
        assert 0.29 <= watch.elapsed() < 1.0


async def test_upstream_slow_close_holds_the_servers_eof(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "slow_close", {"delay": 300}, stream="upstream")
    async with client(port) as (_, writer):
        upstream_reader, _ = await server.accepted()
        watch = Stopwatch()
        writer.close()
        assert await read_to_end(upstream_reader) == b""
        assert 0.29 <= watch.elapsed() < 1.0
