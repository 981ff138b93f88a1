"""The Twilio edge playout model (doc 4) with explicit times.

Chunks of 1000 bytes last 1/8 s at 8000 bytes/s and the times used are multiples of 1/16 s, so every expected
time is exact in binary floating point and the tests compare with ``==``.
"""

from __future__ import annotations

import pytest

from harness.clock import ManualClock
from harness.playout import ClearResult, MarkReached, PlayedAudio, Playout, PlayoutEvent, Underrun

A = bytes([1]) * 1000
B = bytes([2]) * 1000
C = bytes([3]) * 1000


def played_bytes(events: list[PlayoutEvent]) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, PlayedAudio))


def byte_times(events: list[PlayoutEvent], bytes_per_second: int = 8000) -> list[float]:
    """When each played byte is heard: byte i of a piece plays at start + i / rate."""
    return [
        e.start + i / bytes_per_second
        for e in events
        if isinstance(e, PlayedAudio)
        for i in range(len(e.payload))
    ]


def test_audio_arriving_on_an_idle_queue_starts_playing_on_arrival():
    playout = Playout()
    playout.enqueue_audio(A, now=1.0)
    assert playout.advance(1.0) == []  # nothing has played yet at the instant it arrived
    assert playout.is_playing(1.0)
    assert playout.ends_at == 1.125
    assert playout.advance(1.125) == [PlayedAudio(1.0, A)]
    assert playout.advance(1.25) == [Underrun(1.125)]
    assert playout.advance(2.0) == []
    assert not playout.is_playing(2.0) and playout.ends_at is None


def test_marks_are_echoed_when_the_audio_before_them_has_played():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_mark("first", now=0.0625)
    playout.enqueue_audio(B, now=0.0625)
    playout.enqueue_mark("second", now=0.1)
    assert playout.advance(0.124) == [PlayedAudio(0.0, A[:992])]
    assert playout.advance(0.125) == [PlayedAudio(0.124, A[992:]), MarkReached("first", 0.125)]
    assert playout.advance(0.2499) == [PlayedAudio(0.125, B[:999])]
    assert playout.advance(0.25) == [PlayedAudio(0.25 - 1 / 8000, B[999:]), MarkReached("second", 0.25)]
    assert playout.advance(0.3) == [Underrun(0.25)]


def test_mark_with_nothing_queued_is_reached_on_arrival():
    playout = Playout()
    playout.enqueue_mark("greeting", now=3.0)
    assert playout.advance(3.0) == [MarkReached("greeting", 3.0)]
    # Also right after the queue has drained, before anyone asked.
    playout.enqueue_audio(A, now=4.0)
    playout.enqueue_mark("late", now=4.5)
    assert playout.advance(4.5) == [PlayedAudio(4.0, A), Underrun(4.125), MarkReached("late", 4.5)]


def test_mark_at_the_very_end_comes_before_the_underrun():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_mark("end", now=0.0)
    assert playout.advance(1.0) == [PlayedAudio(0.0, A), MarkReached("end", 0.125), Underrun(0.125)]


def test_clear_drops_queued_audio_and_echoes_pending_marks_at_once():
    playout = Playout()
    playout.enqueue_audio(A + B, now=0.0)
    playout.enqueue_mark("after-b", now=0.0)
    playout.enqueue_audio(C, now=0.0)
    playout.enqueue_mark("after-c", now=0.0)
    result = playout.clear(now=0.0625)
    assert result == ClearResult(
        at=0.0625,
        events=(PlayedAudio(0.0, A[:500]),),
        dropped_bytes=2500,
        marks=("after-b", "after-c"),
        was_playing=True,
    )
    assert playout.queued_bytes == 0
    assert playout.advance(1.0) == []  # a clear that cuts audio is not an underrun
    assert not playout.is_playing(1.0)


def test_clear_keeps_marks_already_reached_and_reports_the_rest():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_mark("a", now=0.0)
    playout.enqueue_audio(B, now=0.0)
    playout.enqueue_mark("b", now=0.0)
    result = playout.clear(now=0.125)
    # "a" was reached by playout (in events); "b" is echoed by the clear (in marks), each exactly once.
    assert result.events == (PlayedAudio(0.0, A), MarkReached("a", 0.125))
    assert result.marks == ("b",)
    assert result.dropped_bytes == 1000
    assert result.was_playing


def test_clear_with_nothing_queued_is_routine():
    # Pipecat sends clear at the start of every caller turn, also when nothing is playing (doc 5).
    playout = Playout()
    assert playout.clear(now=5.0) == ClearResult(5.0, (), 0, (), False)
    playout.enqueue_audio(A, now=6.0)
    result = playout.clear(now=7.0)
    assert result.events == (PlayedAudio(6.0, A), Underrun(6.125))
    assert not result.was_playing and result.dropped_bytes == 0


def test_every_mark_is_reported_once_across_advance_and_clear():
    playout = Playout()
    playout.enqueue_mark("idle", now=0.0)  # reached on arrival
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_mark("queued", now=0.0)
    result = playout.clear(now=0.0625)
    reached = [e.name for e in result.events if isinstance(e, MarkReached)]
    assert reached == ["idle"] and result.marks == ("queued",)
    assert playout.advance(1.0) == []


def test_audio_after_clear_starts_on_arrival():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.clear(now=0.0625)
    playout.enqueue_audio(B, now=0.5)
    assert playout.advance(1.0) == [PlayedAudio(0.5, B), Underrun(0.625)]


def test_underrun_then_new_audio_restarts_at_arrival_and_the_gap_is_exact():
    playout = Playout()
    playout.enqueue_audio(A, now=10.0)
    playout.enqueue_audio(B, now=10.5)  # the queue ran dry at 10.125
    events = playout.advance(11.0)
    assert events == [PlayedAudio(10.0, A), Underrun(10.125), PlayedAudio(10.5, B), Underrun(10.625)]
    silence = events[2].start - events[1].at
    assert silence == 0.375


def test_audio_arriving_exactly_when_the_queue_runs_dry_continues_without_a_gap():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    assert playout.advance(0.125) == [PlayedAudio(0.0, A)]  # dry at this instant, but not yet an underrun
    playout.enqueue_audio(B, now=0.125)
    assert playout.advance(0.5) == [PlayedAudio(0.125, B), Underrun(0.25)]


def test_partial_advances_split_chunks_exactly():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_audio(B, now=0.0)
    assert playout.advance(0.0625) == [PlayedAudio(0.0, A[:500])]
    assert playout.advance(0.1) == [PlayedAudio(0.0625, A[500:800])]
    assert playout.advance(0.1875) == [PlayedAudio(800 / 8000, A[800:]), PlayedAudio(0.125, B[:500])]
    assert playout.advance(0.1875) == []
    assert playout.queued_bytes == 500 and playout.queued_seconds == 0.0625
    assert playout.advance(0.25) == [PlayedAudio(0.1875, B[500:])]


def test_a_byte_counts_once_it_has_played():
    # A byte counts once it has finished playing: 10.3 byte periods in, 10 bytes have played.
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    assert playout.advance(10.3 / 8000) == [PlayedAudio(0.0, A[:10])]
    assert playout.advance(11 / 8000) == [PlayedAudio(10 / 8000, A[10:11])]


def test_advance_called_late_reports_the_same_times():
    arrivals = [(0.0, A), (0.0625, B), (0.5, C)]  # B arrives while A plays; C after an underrun at 0.25
    late = Playout()
    for when, payload in arrivals:
        late.enqueue_audio(payload, when)
    once = late.advance(2.0)
    assert once == [
        PlayedAudio(0.0, A),
        PlayedAudio(0.125, B),
        Underrun(0.25),
        PlayedAudio(0.5, C),
        Underrun(0.625),
    ]

    # The same arrivals with an event loop that advances every millisecond: same audio, same times.
    clock = ManualClock()
    often = Playout()
    events: list[PlayoutEvent] = []
    pending = list(arrivals)
    while clock.now() < 2.0:
        while pending and pending[0][0] <= clock.now():
            when, payload = pending.pop(0)
            often.enqueue_audio(payload, when)
        events += often.advance(clock.now())
        clock.advance(0.001)
    events += often.advance(2.0)
    assert played_bytes(events) == A + B + C
    assert byte_times(events) == pytest.approx(byte_times(once), abs=1e-12)
    assert [e for e in events if not isinstance(e, PlayedAudio)] == [Underrun(0.25), Underrun(0.625)]


def test_a_loop_that_wakes_late_still_places_the_audio_where_it_played():
    playout = Playout()
    playout.enqueue_audio(A, now=0.0)
    playout.enqueue_mark("m", now=0.0)
    # The loop wakes 300 ms late: the mark is still reported at 0.125, where playout reached it.
    assert playout.advance(0.4375) == [PlayedAudio(0.0, A), MarkReached("m", 0.125), Underrun(0.125)]


def test_a_burst_of_five_seconds_received_in_50_ms_plays_over_five_seconds():
    playout = Playout()
    frame = bytes([0x7F]) * 320  # Pipecat's 40 ms chunk
    for i in range(125):  # 125 x 40 ms = 5 s, sent within 50 ms
        playout.enqueue_audio(frame, now=i * 0.0004)
    assert played_bytes(playout.advance(0.05)) == frame[:320] + frame[:80]  # 50 ms = 400 bytes heard
    assert playout.queued_seconds == 4.95
    assert playout.ends_at == 5.0
    assert playout.is_playing(4.99)
    assert not playout.is_playing(5.0)
    middle = playout.advance(4.9)
    assert not any(isinstance(e, Underrun) for e in middle)
    tail = playout.advance(5.0)
    assert not any(isinstance(e, Underrun) for e in tail)
    assert len(played_bytes(middle + tail)) == 40000 - 400
    assert playout.advance(5.5) == [Underrun(5.0)]


def test_audio_over_the_queue_limit_is_discarded_and_counted():
    # Twilio discards more than ~10 minutes of queued audio (warning 31931); a 1 s limit here.
    playout = Playout(max_queued_seconds=0.25)
    playout.enqueue_audio(A + B, now=0.0)
    playout.enqueue_audio(C, now=0.0)  # no room left
    assert playout.discarded_bytes == 1000
    assert playout.queued_bytes == 2000
    playout.enqueue_audio(C + C, now=0.0625)  # 500 bytes played since: room for 500
    assert playout.discarded_bytes == 2500
    assert playout.queued_bytes == 2000
    assert played_bytes(playout.advance(1.0)) == A + B + C[:500]


def test_default_queue_limit_is_ten_minutes():
    playout = Playout()
    minute = bytes(8000 * 60)
    for _ in range(11):
        playout.enqueue_audio(minute, now=0.0)
    assert playout.queued_seconds == 600.0
    assert playout.discarded_bytes == 8000 * 60


def test_other_rates():
    playout = Playout(bytes_per_second=16000)  # e.g. 8 kHz linear16
    playout.enqueue_audio(A, now=0.0)
    assert playout.advance(0.0625) == [PlayedAudio(0.0, A)]
    assert playout.advance(0.125) == [Underrun(0.0625)]


def test_empty_payload_changes_nothing():
    playout = Playout()
    playout.enqueue_audio(b"", now=1.0)
    assert playout.advance(2.0) == []
    assert playout.ends_at is None


def test_time_must_not_go_backwards():
    playout = Playout()
    playout.advance(2.0)
    with pytest.raises(ValueError, match="backwards"):
        playout.enqueue_audio(A, now=1.0)


@pytest.mark.parametrize(
    "kwargs", [{"bytes_per_second": 0}, {"max_queued_seconds": 0}, {"max_queued_seconds": 0.0001}]
)
def test_bad_configuration(kwargs: dict[str, float]):
    with pytest.raises(ValueError):
        Playout(**kwargs)  # type: ignore[arg-type]
