"""bandwidth: rate KB/s (1 KB = 1000 B); chunks over rate*100 B cut and sent every 100 ms; rate 0 stalls."""

from __future__ import annotations

import asyncio
from random import Random

from harness.chaos.toxiproxy.toxics import END, Bandwidth, Chunk
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of, read_exactly, stays_open


def test_core_cuts_big_chunks_into_100ms_pieces() -> None:
    state = Bandwidth(rate=100).start(0.0, Random(0))
    state.receive(Chunk(b"x" * 25_000, 0.0), 0.0)
    assert state.pull(0.099) == []
    assert [len(c.data) for c in state.pull(0.1) if isinstance(c, Chunk)] == [10_000]
    assert [len(c.data) for c in state.pull(0.2) if isinstance(c, Chunk)] == [10_000]
    assert state.deadline() is not None and abs(state.deadline() - 0.25) < 1e-9  # type: ignore[operator]
    assert [len(c.data) for c in state.pull(0.25) if isinstance(c, Chunk)] == [5_000]


def test_core_idle_time_earns_no_credit_and_end_waits_its_turn() -> None:
    state = Bandwidth(rate=1).start(0.0, Random(0))  # 1000 B/s
    state.receive(Chunk(b"x" * 50, 10.0), 10.0)
    state.receive(END, 10.0)
    assert state.pull(10.049) == []
    assert state.pull(10.05) == [Chunk(b"x" * 50, 10.0), END]


def test_core_rate_zero_holds_everything_until_removed() -> None:
    state = Bandwidth(rate=0).start(0.0, Random(0))
    state.receive(Chunk(b"stuck", 0.0), 0.0)
    assert state.pull(1e9) == []
    assert state.deadline() is None
    assert state.held_bytes() == 5
    assert state.removed() == [Chunk(b"stuck", 0.0)]


async def test_rate_limits_a_50_kb_download(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "bandwidth", {"rate": 100})  # 100 KB/s: 50 KB takes about 0.5 s
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        upstream_writer.write(b"d" * 50_000)
        assert await read_exactly(reader, 50_000, timeout=5) == b"d" * 50_000
        assert 0.45 <= watch.elapsed() < 1.5


async def test_upstream_rate_limits_an_upload(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "bandwidth", {"rate": 100}, stream="upstream")
    async with client(port) as (_, writer):
        upstream_reader, _ = await server.accepted()
        watch = Stopwatch()
        writer.write(b"u" * 30_000)
        assert len(await read_exactly(upstream_reader, 30_000)) == 30_000
        assert 0.27 <= watch.elapsed() < 1.2


async def test_rate_zero_stalls_until_the_toxic_is_removed(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "bandwidth", {"rate": 0})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        upstream_writer.write(b"nothing gets through")
        assert await stays_open(reader, 0.4)
        await api.delete_toxic("p", "bandwidth_downstream")
        assert await read_exactly(reader, 20, timeout=2) == b"nothing gets through"


async def test_updating_the_rate_applies_to_a_live_connection(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "bandwidth", {"rate": 0})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        upstream_writer.write(b"z" * 20_000)
        await asyncio.sleep(0.1)
        watch = Stopwatch()
        await api.update_toxic("p", "bandwidth_downstream", {"attributes": {"rate": 100}})
        assert len(await read_exactly(reader, 20_000)) == 20_000
        assert 0.15 <= watch.elapsed() < 1.0
