"""Measurement truth: against an agent with known timing, the harness reports what a person would hear (±20 ms)."""

from __future__ import annotations

import pytest

from harness.caller import Dial
from harness.records import Outcome
from harness.scenario import HangUp, Limits, Say, WaitForGreeting
from harness.testing.calls import place_call
from harness.testing.known_agent import KnownAgent, serve_known_agent

TOLERANCE_MS = 20.0


async def _one_call(url: str, script: list, limits: Limits | None = None):
    call = await place_call(Dial(websocket_url=url), script, limits or Limits(end_of_turn_silence=1.5, settle=0.3))
    return call.record, call.events, call.pacer


@pytest.mark.parametrize("gap_mode", ["bytes", "wait"])
async def test_latency_and_gap_match_a_known_agent(gap_mode: str) -> None:
    agent = KnownAgent(reply=["first part of the answer.", "and the second part."], reply_delay=0.4, gap=0.7,
                       gap_mode=gap_mode)
    script = [Say(text="hello, is anybody there?", think_time=0.1,
                  expect=["first part of the answer.", "and the second part."]), HangUp()]
    async with serve_known_agent(agent) as url:
        record, _, pacer = await _one_call(url, script)
    assert record.outcome is Outcome.COMPLETED, record.reason
    (turn,) = record.turns
    assert turn.status == "ok", turn
    assert turn.heard == ["first part of the answer.", "and the second part."]
    assert turn.response_latency_ms is not None
    assert abs(turn.response_latency_ms - 400.0) <= TOLERANCE_MS, turn.response_latency_ms
    assert len(turn.gaps_ms) == 1, turn.gaps_ms
    assert abs(turn.gaps_ms[0] - 700.0) <= TOLERANCE_MS, turn.gaps_ms
    assert pacer.lateness.total == record.frames_sent > 0


async def test_latency_is_taken_on_the_playout_timeline_not_on_arrival() -> None:
    """The agent answers with 3 s of audio in one burst and then a second phrase: the second phrase arrives early
    but is heard only after the first has played; no gap is reported between them."""
    agent = KnownAgent(reply=["one two three four five six seven eight nine ten.", "eleven."], reply_delay=0.3,
                       gap=0.0, gap_mode="bytes")
    script = [Say(text="count for me please.", think_time=0.1, expect=["eleven."]), HangUp()]
    async with serve_known_agent(agent) as url:
        record, _, _ = await _one_call(url, script)
    (turn,) = record.turns
    assert turn.heard == ["one two three four five six seven eight nine ten.", "eleven."]
    assert abs((turn.response_latency_ms or 0) - 300.0) <= TOLERANCE_MS
    # phrases abut: whatever the codec's own edges, no dead air is reported
    assert turn.max_gap_ms < 150.0, turn.gaps_ms


async def test_barge_in_reaction_is_measured_from_caller_speech_to_clear() -> None:
    greeting = "welcome to the known agent, this greeting is long on purpose so that you can interrupt it."
    agent = KnownAgent(reply=["you interrupted me."], reply_delay=0.3, gap=0.0, greeting=greeting, clear_after=0.25)
    script = [WaitForGreeting(), Say(text="sorry to interrupt.", barge_in_after=1.0, expect=["you interrupted me."]),
              HangUp()]
    async with serve_known_agent(agent) as url:
        record, _, _ = await _one_call(url, script)
    assert record.outcome is Outcome.COMPLETED, record.reason
    greeting_turn, reply = record.turns
    assert greeting_turn.status == "interrupted"
    assert greeting_turn.cut_phrases == 1 and greeting_turn.undecodable == 0  # cut short is not garbled
    assert reply.barge_in and reply.status == "ok", reply
    assert reply.barge_in_reaction_ms is not None
    assert abs(reply.barge_in_reaction_ms - 250.0) <= TOLERANCE_MS, reply.barge_in_reaction_ms
    assert record.clears == 1 and reply.stray_clears == 0


async def test_a_clear_while_nothing_plays_is_not_a_reaction() -> None:
    agent = KnownAgent(reply=["fine."], reply_delay=0.3, gap=0.0, clear_after=0.0, clear_every_turn=True)
    script = [Say(text="first.", think_time=0.0, expect=["fine."]),
              Say(text="second.", think_time=0.2, expect=["fine."]), HangUp()]
    async with serve_known_agent(agent) as url:
        record, _, _ = await _one_call(url, script)
    assert record.outcome is Outcome.COMPLETED, record.reason
    assert record.clears == 2
    assert record.stray_clears == 2
    assert all(turn.barge_in_reaction_ms is None and turn.status == "ok" for turn in record.turns)
