"""slicer: chunks cut by Go's repeated halving into pieces of about average ± variation, ``delay`` µs apart."""

from __future__ import annotations

from itertools import pairwise
from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, Slicer
from harness.chaos.toxiproxy.toxics.slicer import cut
from tests.toxiproxy.kit import Api, Stopwatch, Upstream, client, port_of


def sizes(offsets: list[int]) -> list[int]:
    return [b - a for a, b in pairwise(offsets)]


def test_core_100_bytes_average_10_variation_0_is_16_pieces_of_6_or_7() -> None:
    pieces = sizes(cut(100, 10, 0, Random(0)))
    assert len(pieces) == 16
    assert set(pieces) <= {6, 7}
    assert sum(pieces) == 100


def test_core_variation_keeps_pieces_near_the_average() -> None:
    pieces = sizes(cut(10_000, 100, 20, Random(5)))
    assert sum(pieces) == 10_000
    assert all(30 <= p <= 121 for p in pieces)


def test_core_degenerate_average_stops_at_one_byte() -> None:
    assert sizes(cut(5, 0, 0, Random(0))) == [1, 1, 1, 1, 1]


def test_core_pieces_leave_one_delay_apart_and_removal_hands_on_the_rest() -> None:
    state = Slicer(average_size=10, size_variation=0, delay=1000).start(0.0, Random(0))  # 1 ms between pieces
    state.receive(Chunk(b"x" * 100, 0.0), 0.0)
    state.receive(END, 0.0)
    first = state.pull(0.0)
    assert len(first) == 1 and state.deadline() == 0.001
    assert state.pull(0.0005) == []
    second = state.pull(0.001)
    assert len(second) == 1
    rest = state.removed()
    delivered = sum(len(c.data) for c in (*first, *second) if isinstance(c, Chunk))
    assert sum(len(c.data) for c in rest if isinstance(c, Chunk)) == 100 - delivered
    assert rest[-1] is END


async def test_a_100_byte_write_arrives_in_pieces(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "slicer", {"average_size": 10, "size_variation": 0, "delay": 30_000})
    async with client(port) as (reader, _):
        _, upstream_writer = await server.accepted()
        watch = Stopwatch()
        upstream_writer.write(bytes(range(100)))
        received = b""
        pieces: list[int] = []
        while len(received) < 100:
            piece = await reader.read(1000)
            assert piece
            pieces.append(len(piece))
            received += piece
        assert received == bytes(range(100))
        # 16 pieces 30 ms apart; a reader that falls behind on a busy machine may see two together.
        assert len(pieces) >= 10
        assert max(pieces) <= 14
        assert watch.elapsed() >= 0.4


async def test_upstream_slicing_reaches_the_server_whole(api: Api, server: Upstream) -> None:
    port = port_of(await api.create_proxy("p", server.address))
    await api.add_toxic("p", "slicer", {"average_size": 100, "size_variation": 50, "delay": 0}, stream="upstream")
    async with client(port) as (_, writer):
        upstream_reader, _ = await server.accepted()
        payload = bytes(range(256)) * 40
        writer.write(payload)
        assert await upstream_reader.readexactly(len(payload)) == payload
