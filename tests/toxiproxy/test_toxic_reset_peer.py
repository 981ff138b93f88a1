"""reset_peer: ``timeout`` after the first data or EOF the connection ends: RST if the toxic was there at accept."""

from __future__ import annotations

import asyncio
from random import Random

import pytest

from harness.chaos.toxiproxy.toxics import END, Chunk, ResetPeer
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of, read_to_end, stays_open


def test_core_nothing_happens_until_data_then_the_countdown() -> None:
    state = ResetPeer(timeout=200).start(0.0, Random(0))
    assert state.deadline() is None
    assert state.pull(100.0) == []
    state.receive(Chunk(b"first", 100.0), 100.0)  # consumed: it starts the countdown
    state.receive(Chunk(b"later", 100.1), 100.1)  # held back
    assert state.pull(100.1) == []
    assert state.deadline() == pytest.approx(100.2)
    assert state.pull(100.2) == [END]


def test_core_the_end_of_stream_also_starts_the_countdown() -> None:
    state = ResetPeer(timeout=0).start(0.0, Random(0))
    state.receive(END, 1.0)
    assert state.pull(1.0) == [END]


def test_core_interrupting_cancels_and_hands_on_held_data() -> None:
    state = ResetPeer(timeout=10_000).start(0.0, Random(0))
    state.receive(Chunk(b"first", 0.0), 0.0)
    state.receive(Chunk(b"later", 0.0), 0.0)
    assert state.removed() == [Chunk(b"later", 0.0)]


async def test_resets_the_client_after_the_timeout(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "reset_peer", {"timeout": 200})
    async with client(port) as (reader, writer):
        watch = Stopwatch()
        writer.write(b"hello")  # its echo is the first downstream data
        with pytest.raises(ConnectionResetError):
            await read_to_end(reader)
        assert 0.19 <= watch.elapsed() < 1.0


async def test_nothing_happens_until_data_flows(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    await api.add_toxic("p", "reset_peer", {"timeout": 0})
    async with client(port) as (reader, writer):
        assert await stays_open(reader, 0.3)
        writer.write(b"now")
        with pytest.raises(ConnectionResetError):
            await read_to_end(reader)


async def test_added_to_a_live_connection_it_closes_with_fin(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    async with client(port) as (reader, writer):
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        await api.add_toxic("p", "reset_peer", {"timeout": 100})
        writer.write(b"b")
        assert await read_to_end(reader) == b""  # an ordinary close, not an RST


async def test_on_the_upstream_stream_both_sides_are_reset(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "reset_peer", {"timeout": 100}, stream="upstream")
    async with client(port) as (reader, writer):
        upstream_reader, _ = await server.accepted()
        writer.write(b"trigger")
        with pytest.raises(ConnectionResetError):
            await read_to_end(upstream_reader)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(-1), 5)
