"""The sans-I/O chain of toxic states: order, deadlines, updates and removals, with literal times and no sockets."""

from __future__ import annotations

from random import Random

from harness.chaos.toxiproxy.chain import ToxicChain
from harness.chaos.toxiproxy.toxics import END, Chunk, Latency, LimitData, Noop, Timeout


def chain_of(*toxics: tuple[str, object]) -> ToxicChain:
    chain = ToxicChain()
    for name, toxic in toxics:
        chain.add(name, toxic.start(0.0, Random(0)))  # type: ignore[attr-defined]
    return chain


def test_pass_through_stages_deliver_in_the_same_advance() -> None:
    chain = chain_of(("a", Noop()), ("b", Noop()))
    chain.feed(Chunk(b"x", 0.0), 0.0)
    assert chain.advance(0.0) == [Chunk(b"x", 0.0)]
    assert chain.deadline() is None


def test_stages_compose_in_order_and_report_the_earliest_deadline() -> None:
    chain = chain_of(("delay", Latency(latency=100)), ("limit", LimitData(bytes=2)))
    chain.feed(Chunk(b"abc", 0.0), 0.0)
    assert chain.advance(0.0) == []
    assert chain.deadline() == 0.1
    assert chain.held_bytes() == 3
    assert chain.advance(0.1) == [Chunk(b"ab", 0.1), END]


def test_a_stage_that_ended_drops_what_still_reaches_it() -> None:
    chain = chain_of(("limit", LimitData(bytes=1)))
    chain.feed(Chunk(b"ab", 0.0), 0.0)
    assert chain.advance(0.0) == [Chunk(b"a", 0.0), END]
    chain.feed(Chunk(b"late", 0.0), 0.0)
    assert chain.advance(0.0) == []


def test_removal_hands_held_items_to_the_next_stage_or_the_output() -> None:
    chain = chain_of(("delay", Latency(latency=1000)), ("noop", Noop()))
    chain.feed(Chunk(b"held", 0.0), 0.0)
    chain.advance(0.0)
    chain.remove("delay", 0.5)
    assert chain.advance(0.5) == [Chunk(b"held", 0.0)]
    chain.remove("noop", 0.5)
    assert not chain


def test_removing_a_timeout_closes() -> None:
    chain = chain_of(("timeout", Timeout(timeout=0)))
    chain.remove("timeout", 1.0)
    assert chain.advance(1.0) == [END]


def test_replace_re_times_held_items_from_when_they_were_read() -> None:
    chain = chain_of(("delay", Latency(latency=1000)))
    chain.feed(Chunk(b"x", 0.0), 0.0)
    chain.advance(0.0)
    chain.replace("delay", Latency(latency=100).start(0.5, Random(0)), 0.5)
    assert chain.deadline() == 0.1
    assert chain.advance(0.5) == [Chunk(b"x", 0.1)]
