"""Load shapes: the plan Locust's ``tick()`` follows, asked at chosen instants of a run; their scenario validation."""

from __future__ import annotations

import os

# Before locust is imported anywhere in this process: the pytest process must never be monkey-patched by gevent.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

import math

import pytest
from locust import LoadTestShape
from locust.util.load_locustfile import is_shape_class

from harness.clock import ManualClock
from harness.load.locust_shapes import PlannedShape, shape_class
from harness.load.shapes import (
    Ramp,
    ShapeError,
    Soak,
    Spike,
    Steps,
    default_shape,
    users_at,
)
from harness.scenario import ScenarioError, scenario_from_mapping


def ticks(shape, times: list[float]) -> list[tuple[int, float] | None]:
    """What a Locust shape following ``shape`` returns when the run has lasted each of ``times`` seconds."""
    cls = shape_class(shape, "UnderTest")
    out = []
    for t in times:  # a fresh shape per instant, so the times need not be in order
        clock = ManualClock()
        locust_shape = cls(clock)
        clock.set(t)
        out.append(locust_shape.tick())
    return out


def counts(shape, times: list[float]) -> list[int | None]:
    return [None if tick is None else tick[0] for tick in ticks(shape, times)]


# --- ramp -------------------------------------------------------------------------------------------------------------


def test_ramp_climbs_in_a_straight_line_holds_then_stops() -> None:
    ramp = Ramp(users=20, ramp=10, hold=30)
    assert ramp.total_s == 40
    assert counts(ramp, [0, 2.5, 5, 9.9, 10, 25, 39.9, 40, 41]) == [0, 5, 10, 20, 20, 20, 20, None, None]
    # default spawn rate: the slope, 2 calls per second
    assert ticks(ramp, [5]) == [(10, 2.0)]


def test_ramp_from_a_start_count_and_down() -> None:
    up = Ramp(start_users=10, users=30, ramp=20, hold=5)
    assert counts(up, [0, 10, 20]) == [10, 20, 30]
    # the jump to start_users at t=0 lands within one tick: it sets the rate, not the slope (1/s)
    assert up.effective_spawn_rate == 10
    down = Ramp(start_users=30, users=0, ramp=30)
    assert counts(down, [0, 15, 29, 30]) == [30, 15, 1, None]


def test_rounding_is_to_the_nearest_call_half_up_and_the_rate_never_zero() -> None:
    ramp = Ramp(users=3, ramp=6, hold=1)  # 0.5 calls per second
    assert counts(ramp, [0, 0.9, 1.0, 2.9, 3.0]) == [0, 0, 1, 1, 2]
    flat = Ramp(users=0, ramp=5)
    assert users_at(flat, 1) == (0, 1.0)
    assert Ramp(users=5, ramp=10, spawn_rate=0.25).effective_spawn_rate == 0.25


def test_ramp_with_duration_sets_the_hold_and_refuses_a_shorter_run() -> None:
    ramp = Ramp(users=20, ramp=60, hold=10)
    longer = ramp.with_duration(7200)
    assert longer == Ramp(users=20, ramp=60, hold=7140)
    assert longer.total_s == 7200
    assert ramp.with_duration(60).total_s == 60
    with pytest.raises(ShapeError, match="a ramp of 60 s does not fit in 30 s"):
        ramp.with_duration(30)
    with pytest.raises(ShapeError, match="positive number of seconds"):
        ramp.with_duration(0)


# --- steps ------------------------------------------------------------------------------------------------------------


def test_steps_climb_one_stair_every_step_every_and_hold_the_top() -> None:
    steps = Steps(start_users=5, step_users=10, step_every=30, steps=3, hold=60)
    assert steps.total_s == 150
    assert counts(steps, [0, 29.9, 30, 59, 60, 90, 149, 150]) == [5, 5, 15, 15, 25, 35, 35, None]
    # each stair's jump lands within one tick
    assert ticks(steps, [30]) == [(15, 10.0)]


def test_the_top_stair_lasts_a_step_by_default_and_with_duration_extends_it() -> None:
    steps = Steps(step_users=4, step_every=20, steps=2)
    assert steps.total_s == 60
    assert counts(steps, [0, 20, 40, 59, 60]) == [0, 4, 8, 8, None]
    longer = steps.with_duration(3600)
    assert longer.hold == 3600 - 40 and longer.total_s == 3600
    with pytest.raises(ShapeError, match="leaves no time on the top stair"):
        steps.with_duration(40)


# --- spike ------------------------------------------------------------------------------------------------------------


def test_spike_jumps_for_its_length_then_falls_back_to_base() -> None:
    spike = Spike(base_users=10, spike_users=100, spike_at=60, spike_length=30, duration=180)
    times = [0, 59.9, 60, 75, 89.9, 90, 179, 180]
    assert counts(spike, times) == [10, 10, 100, 100, 100, 10, 10, None]
    # the whole jump within one tick: that is what a spike is
    assert spike.effective_spawn_rate == 90
    assert spike.with_duration(600).total_s == 600
    with pytest.raises(ShapeError, match="the spike ends at 90 s"):
        spike.with_duration(80)


# --- soak -------------------------------------------------------------------------------------------------------------


def test_soak_follows_a_raised_cosine_day() -> None:
    day = 24 * 3600.0
    soak = Soak(min_users=10, max_users=110, peak_at=0.5, duration=day)
    assert counts(soak, [day / 2, 0, day / 4, 3 * day / 4]) == [110, 10, 60, 60]
    # the formula in the docstring, at an arbitrary instant
    t = 5000.0
    expected = 10 + 100 * (1 + math.cos(2 * math.pi * (t / day - 0.5))) / 2
    assert soak.planned_users(t) == pytest.approx(expected)


def test_soak_peaks_at_two_pm_by_default_and_is_symmetric_around_the_peak() -> None:
    soak = Soak(min_users=0, max_users=1000, duration=7200)  # a 2 h nightly soak: one compressed day
    peak = 0.58 * 7200
    trough = peak - 3600  # half a day before the peak
    assert soak.planned_users(peak) == pytest.approx(1000)
    assert soak.planned_users(trough) == pytest.approx(0, abs=1e-9)
    for offset in (100.0, 900.0, 2000.0):
        assert counts(soak, [peak - offset]) == counts(soak, [peak + offset])
    # night -> peak -> night: it starts and ends low
    start, top, end = counts(soak, [0, peak, 7199])
    assert start is not None and end is not None and start < 100 and end < 100 and top == 1000


def test_soak_with_duration_keeps_one_day_per_run_unless_the_day_was_given() -> None:
    soak = Soak(max_users=50, duration=600)
    longer = soak.with_duration(7200)
    assert longer.total_s == 7200 and longer.day_s == 7200
    assert longer.planned_users(0.58 * 7200) == pytest.approx(50)
    fixed_day = Soak(max_users=50, duration=600, day_length=300).with_duration(1200)
    assert fixed_day.day_s == 300  # the day repeats four times


def test_soak_spawn_rate_covers_the_start_and_the_steepest_slope() -> None:
    soak = Soak(min_users=100, max_users=200, duration=100, peak_at=0.5)
    # at t=0 the curve is at its trough (100 calls, all started in the first tick); steepest slope 100π/100 ≈ 3.1/s
    assert soak.effective_spawn_rate == pytest.approx(100)
    fast = Soak(min_users=0, max_users=1000, duration=100, peak_at=0.5)
    assert fast.effective_spawn_rate == pytest.approx(1000 * math.pi / 100)


# --- the plan ---------------------------------------------------------------------------------------------------------


def test_users_at_is_a_pure_function_of_time() -> None:
    spike = Spike(base_users=1, spike_users=9, spike_at=5, spike_length=5, duration=20)
    assert [users_at(spike, t) for t in (7, 1, 7)] == [(9, 8.0), (1, 8.0), (9, 8.0)]
    with pytest.raises(ValueError, match="run time"):
        users_at(spike, -1)
    with pytest.raises(ValueError, match="run time"):
        users_at(spike, math.nan)


def test_default_shape_ramps_at_the_arrival_rate_and_holds_until_the_end() -> None:
    shape = default_shape(callers_count=12, concurrency=None, arrival_rate=6, duration=150)
    assert shape == Ramp(users=12, ramp=2, hold=148, spawn_rate=6)
    assert counts(shape, [0, 1, 2, 100, 150]) == [0, 6, 12, 12, None]
    limited = default_shape(callers_count=500, concurrency=40, arrival_rate=4, duration=300)
    assert limited == Ramp(users=40, ramp=10, hold=290, spawn_rate=4)


def test_default_shape_cut_by_a_short_run_keeps_the_arrival_rate() -> None:
    shape = default_shape(callers_count=10_000, concurrency=None, arrival_rate=5, duration=60)
    assert shape == Ramp(users=300, ramp=60, hold=0, spawn_rate=5)
    assert counts(shape, [30, 59]) == [150, 295]
    with pytest.raises(ShapeError):
        default_shape(callers_count=10, concurrency=None, arrival_rate=0, duration=60)


# --- the Locust adapter -----------------------------------------------------------------------------------------------


def test_shape_class_is_a_concrete_locust_shape_that_locust_would_pick_up() -> None:
    ramp = Ramp(users=4, ramp=4, hold=1)
    cls = shape_class(ramp, "VoiceLoad")
    assert issubclass(cls, LoadTestShape) and cls.__name__ == "VoiceLoad" and cls.plan is ramp
    assert is_shape_class(cls)
    assert not is_shape_class(PlannedShape)  # the base would otherwise be picked up from the locustfile's imports
    assert cls().tick() == (0, 1.0)  # as Locust makes it: no arguments, the real clock, run time ~0
    with pytest.raises(ValueError, match="identifier"):
        shape_class(ramp, "voice load")


def test_run_time_counts_from_locusts_reset_and_can_be_overridden() -> None:
    clock = ManualClock(start=1000.0)
    shape = shape_class(Ramp(users=10, ramp=10, hold=5), "VoiceLoad")(clock)
    clock.advance(50)
    shape.reset_time()  # the test starts now
    clock.advance(5)
    assert shape.get_run_time() == 5 and shape.tick() == (5, 1.0)
    shape.get_run_time = lambda: 15.0  # type: ignore[method-assign]
    assert shape.tick() is None


# --- scenario validation ----------------------------------------------------------------------------------------------


def scenario(load: object, **extra: object):
    return scenario_from_mapping({"name": "s", "script": ["hang_up"], "load": load, **extra}, "s.yaml")


def test_a_scenario_load_is_typed_by_its_shape() -> None:
    loaded = scenario({"shape": "spike", "base_users": 5, "spike_users": 50, "spike_at": 30, "spike_length": 10,
                       "duration": 120})
    assert isinstance(loaded.load, Spike) and loaded.load.total_s == 120
    assert scenario_from_mapping({"name": "s", "script": ["hang_up"]}, "s.yaml").load is None


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        ({"shape": "wave", "users": 3}, "s.yaml: load: not a load shape; give shape: one of ramp, steps, spike, soak"),
        ({"users": 3, "ramp": 5}, "s.yaml: load: not a load shape"),
        ({"shape": "ramp", "users": -1, "ramp": 10}, "s.yaml: load.ramp.users: Input should be greater than or equal "
                                                     "to 0"),
        ({"shape": "ramp", "users": 5, "ramp": 0}, "s.yaml: load.ramp.ramp: Input should be greater than 0"),
        ({"shape": "ramp", "users": 5, "ramp": 10, "rampup": 3}, "s.yaml: load.ramp.rampup: unknown key"),
        ({"shape": "ramp", "users": 5, "ramp": 10, "spawn_rate": 0}, "s.yaml: load.ramp.spawn_rate: Input should be "
                                                                     "greater than 0"),
        ({"shape": "steps", "step_users": 5, "step_every": 0.5, "steps": 2},
         "s.yaml: load.steps.step_every: Input should be greater than or equal to 1"),
        ({"shape": "spike", "base_users": 5, "spike_users": 50, "spike_at": 200, "spike_length": 10, "duration": 120},
         "s.yaml: load.spike.spike_at: 200 s is not within the shape's duration (120 s)"),
        ({"shape": "spike", "base_users": 5, "spike_users": 50, "spike_at": 100, "spike_length": 30, "duration": 120},
         "s.yaml: load.spike.spike_length: the spike ends at 130 s, after the shape's duration (120 s)"),
        ({"shape": "soak", "min_users": 50, "max_users": 10, "duration": 60},
         "s.yaml: load.soak.max_users: the peak (10) is below the trough (min_users 50)"),
        ({"shape": "soak", "max_users": 10, "duration": 60, "peak_at": 1.2},
         "s.yaml: load.soak.peak_at: Input should be less than 1"),
        ({"shape": "soak", "max_users": 10, "duration": 7200},
         "s.yaml: load: the soak shape lasts 7200 s, longer than the run (limits.duration 300 s)"),
    ],
)
def test_load_errors_name_the_file_the_field_and_the_reason(load: dict, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario(load)
    assert expected in str(info.value)


def test_a_long_shape_fits_a_long_enough_run() -> None:
    loaded = scenario({"shape": "soak", "max_users": 10, "duration": 7200}, limits={"duration": 7200})
    assert isinstance(loaded.load, Soak)
