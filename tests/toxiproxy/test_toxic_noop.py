"""noop: a valid type that changes nothing (also what a toxic does where its toxicity was not drawn)."""

from __future__ import annotations

from random import Random

from harness.chaos.toxiproxy.toxics import END, Chunk, Noop
from tests.toxiproxy.kit import Api, Upstream, client, port_of, read_exactly


def test_core_passes_everything_in_order() -> None:
    state = Noop().start(0.0, Random(0))
    state.receive(Chunk(b"a", 0.0), 0.0)
    state.receive(END, 0.0)
    assert state.pull(0.0) == [Chunk(b"a", 0.0), END]
    assert state.deadline() is None


async def test_bytes_cross_unchanged_both_ways(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    created = await api.add_toxic("p", "noop", stream="upstream")
    assert created == {"attributes": {}, "name": "noop_upstream", "type": "noop", "stream": "upstream", "toxicity": 1}
    await api.add_toxic("p", "noop")
    payload = bytes(range(256)) * 1000
    async with client(port) as (reader, writer):
        writer.write(payload)
        assert await read_exactly(reader, len(payload)) == payload
