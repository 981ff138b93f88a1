"""Load shapes: how many calls are in flight at each moment of a run, as a pure function of the run's time.

One Locust user is one simulated caller: it places a call and, when that call ends, places the next. So a shape's
*users* are concurrent calls. A shape is typed scenario config (``load:`` in a scenario, discriminated on ``shape``)
plus the plan :func:`users_at`, which Locust's ``LoadTestShape.tick()`` returns on the master about once a second
(:mod:`harness.load.locust_shapes` is that adapter). This module never imports locust: the scenario loader and the
tests import it in processes that gevent must not monkey-patch.

The contract every shape keeps (one small interface, like a fault):

- ``planned_users(t)`` is the planned number of calls ``t`` seconds into the run: a float >= 0 and a pure function
  of ``t`` (no clock, no state), so a run can be replayed and a test can ask about any instant;
- ``total_s`` is the shape's length; at and after it the plan is over (:func:`users_at` returns None, Locust stops);
- ``effective_spawn_rate`` is the users per second Locust starts or stops when the count changes: ``spawn_rate`` if
  given, else the largest change the plan makes between two of Locust's ticks (at least 1), so the calls in flight
  keep up with the plan instead of lagging behind it;
- ``with_duration(seconds)`` is the same shape stretched or cut to last ``seconds``, or a :class:`ShapeError` saying
  why it cannot (``voicechaos soak --duration 2h``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator

#: Locust's shape worker samples the plan about once a second (locust.runners.Runner.shape_worker); a stair or a
#: spike shorter than this could fall between two samples and never happen.
TICK_S = 1.0

SHAPES = ("ramp", "steps", "spike", "soak")


class ShapeError(ValueError):
    """A shape that cannot be built as asked (e.g. a duration shorter than its ramp)."""


def _seconds(seconds: float) -> float:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ShapeError(f"a duration is a positive number of seconds, got {seconds!r}")
    return float(seconds)


class _Shape(BaseModel):
    # The same settings as harness.scenario.Model (not imported from there: scenario.py imports this module).
    model_config = ConfigDict(extra="forbid", frozen=True)

    spawn_rate: float | None = Field(None, gt=0, description="users (calls) per second Locust starts or stops when "
                                                             "the count changes (default: the plan's largest change "
                                                             "per second, at least 1)")

    @abstractmethod
    def planned_users(self, t: float) -> float:
        """The planned number of concurrent calls at ``t`` seconds (0 <= t < total_s), before rounding."""

    @property
    @abstractmethod
    def total_s(self) -> float:
        """How long the shape lasts, in seconds."""

    @abstractmethod
    def with_duration(self, seconds: float) -> LoadShape:
        """This shape made to last ``seconds``; :class:`ShapeError` if it cannot fit."""

    @abstractmethod
    def _largest_change_per_s(self) -> float:
        """The most users the plan adds or removes within one second, counting the jump from 0 at the start."""

    @property
    def effective_spawn_rate(self) -> float:
        if self.spawn_rate is not None:
            return self.spawn_rate
        return max(1.0, self._largest_change_per_s())

    def _changed(self, **changes: Any) -> LoadShape:
        # Validated again (model_copy would not be), so a copy breaks no rule the original keeps.
        return type(self).model_validate(self.model_dump() | changes)  # type: ignore[return-value]


class Ramp(_Shape):
    """From ``start_users`` to ``users`` in a straight line over ``ramp`` seconds, then ``hold`` seconds, then stop.

    A ramp down (``start_users > users``) is allowed: it shows how the platform sheds calls.
    """

    shape: Literal["ramp"] = "ramp"
    start_users: int = Field(0, ge=0, le=1_000_000, description="concurrent calls at the start")
    users: int = Field(ge=0, le=1_000_000, description="concurrent calls at the end of the ramp and during the hold")
    ramp: float = Field(gt=0, description="seconds from start_users to users")
    hold: float = Field(0.0, ge=0, description="seconds at users after the ramp")

    def planned_users(self, t: float) -> float:
        if t >= self.ramp:
            return float(self.users)
        return self.start_users + (self.users - self.start_users) * t / self.ramp

    @property
    def total_s(self) -> float:
        return self.ramp + self.hold

    def with_duration(self, seconds: float) -> LoadShape:
        seconds = _seconds(seconds)
        if seconds < self.ramp:
            raise ShapeError(f"a ramp of {self.ramp:g} s does not fit in {seconds:g} s")
        return self._changed(hold=seconds - self.ramp)

    def _largest_change_per_s(self) -> float:
        return max(float(self.start_users), abs(self.users - self.start_users) / self.ramp)


class Steps(_Shape):
    """A staircase: ``start_users``, then ``step_users`` more every ``step_every`` seconds, ``steps`` times; the top
    stair lasts ``hold`` seconds (default: ``step_every``, like the others), then stop.

    Stair ``k`` (0 = ``start_users``) begins at ``k * step_every``; the run lasts ``steps * step_every + hold``.
    Each stair is a plateau long enough to read the platform's steady state at that load.
    """

    shape: Literal["steps"] = "steps"
    start_users: int = Field(0, ge=0, le=1_000_000, description="concurrent calls on the first stair")
    step_users: int = Field(ge=1, le=1_000_000, description="calls added at each stair")
    step_every: float = Field(ge=TICK_S, description="seconds on each stair (Locust samples the plan once a second)")
    steps: int = Field(ge=1, le=10_000, description="how many stairs are climbed after the first")
    hold: float | None = Field(None, ge=0, description="seconds on the top stair (default: step_every)")

    @property
    def top_users(self) -> int:
        return self.start_users + self.steps * self.step_users

    @property
    def stairs_s(self) -> float:
        """When the top stair begins."""
        return self.steps * self.step_every

    @property
    def hold_s(self) -> float:
        return self.step_every if self.hold is None else self.hold

    def planned_users(self, t: float) -> float:
        stair = min(self.steps, math.floor(t / self.step_every))
        return float(self.start_users + stair * self.step_users)

    @property
    def total_s(self) -> float:
        return self.stairs_s + self.hold_s

    def with_duration(self, seconds: float) -> LoadShape:
        seconds = _seconds(seconds)
        if seconds <= self.stairs_s:
            raise ShapeError(f"{self.steps} stairs of {self.step_every:g} s take {self.stairs_s:g} s: {seconds:g} s "
                             "leaves no time on the top stair")
        return self._changed(hold=seconds - self.stairs_s)

    def _largest_change_per_s(self) -> float:
        return float(max(self.start_users, self.step_users))


class Spike(_Shape):
    """``base_users``; at ``spike_at`` a jump to ``spike_users`` for ``spike_length`` seconds; back to
    ``base_users``; stop at ``duration``.

    The jump is the point (a marketing blast, a retry storm): by default the spike's calls all start within one
    second. ``spike_users`` below ``base_users`` makes a dip instead.
    """

    shape: Literal["spike"] = "spike"
    base_users: int = Field(ge=0, le=1_000_000, description="concurrent calls before and after the spike")
    spike_users: int = Field(ge=0, le=1_000_000, description="concurrent calls during the spike")
    duration: float = Field(gt=0, description="seconds the whole shape lasts")
    spike_at: float = Field(ge=0, description="seconds into the run the spike begins")
    spike_length: float = Field(ge=TICK_S, description="seconds the spike lasts (Locust samples the plan once a "
                                                       "second)")

    # Fields are validated in the order above, so each check can read the fields before it from info.data (absent
    # when they failed themselves: then there is nothing to compare with).
    @field_validator("spike_at")
    @classmethod
    def _starts_within(cls, value: float, info: ValidationInfo) -> float:
        duration = info.data.get("duration")
        if duration is not None and value >= duration:
            raise ValueError(f"{value:g} s is not within the shape's duration ({duration:g} s)")
        return value

    @field_validator("spike_length")
    @classmethod
    def _ends_within(cls, value: float, info: ValidationInfo) -> float:
        duration, spike_at = info.data.get("duration"), info.data.get("spike_at")
        if duration is not None and spike_at is not None and spike_at + value > duration:
            raise ValueError(f"the spike ends at {spike_at + value:g} s, after the shape's duration ({duration:g} s)")
        return value

    def planned_users(self, t: float) -> float:
        in_spike = self.spike_at <= t < self.spike_at + self.spike_length
        return float(self.spike_users if in_spike else self.base_users)

    @property
    def total_s(self) -> float:
        return self.duration

    def with_duration(self, seconds: float) -> LoadShape:
        seconds = _seconds(seconds)
        ends = self.spike_at + self.spike_length
        if seconds < ends:
            raise ShapeError(f"the spike ends at {ends:g} s: it does not fit in {seconds:g} s")
        return self._changed(duration=seconds)

    def _largest_change_per_s(self) -> float:
        return float(max(self.base_users, abs(self.spike_users - self.base_users)))


class Soak(_Shape):
    """A long run whose calls follow a compressed day: a night trough of ``min_users``, a daytime peak of
    ``max_users`` at ``peak_at`` (a fraction of the day), over ``duration`` seconds.

    The curve is a raised cosine, smooth (no jump the platform would not see in real traffic) and symmetric around
    the peak::

        users(t) = min_users + (max_users - min_users) * (1 + cos(2π (t / day_length - peak_at))) / 2

    ``t = 0`` is midnight of the simulated day; the trough is half a day from the peak (``peak_at ± 0.5``). With
    the default ``day_length = duration`` one run sweeps one whole day, so a 2 h nightly soak goes
    night -> peak -> night; a shorter ``day_length`` repeats the day.
    """

    shape: Literal["soak"] = "soak"
    min_users: int = Field(0, ge=0, le=1_000_000, description="concurrent calls at the night trough")
    max_users: int = Field(ge=1, le=1_000_000, description="concurrent calls at the daytime peak")
    peak_at: float = Field(0.58, ge=0, lt=1, description="when the peak comes, as a fraction of the day "
                                                         "(0.58 ≈ 14:00)")
    duration: float = Field(gt=0, description="seconds the whole soak lasts")
    day_length: float | None = Field(None, gt=0, description="seconds one simulated day lasts (default: duration, "
                                                             "one whole day per run)")

    @field_validator("max_users")
    @classmethod
    def _peak_above_trough(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_users")
        if low is not None and value < low:
            raise ValueError(f"the peak ({value}) is below the trough (min_users {low})")
        return value

    @property
    def day_s(self) -> float:
        return self.duration if self.day_length is None else self.day_length

    def planned_users(self, t: float) -> float:
        swing = self.max_users - self.min_users
        return self.min_users + swing * (1 + math.cos(2 * math.pi * (t / self.day_s - self.peak_at))) / 2

    @property
    def total_s(self) -> float:
        return self.duration

    def with_duration(self, seconds: float) -> LoadShape:
        # A defaulted day_length (None) follows the new duration by itself: still one whole day per run.
        return self._changed(duration=_seconds(seconds))

    def _largest_change_per_s(self) -> float:
        # The steepest slope of the cosine (at a quarter day from the peak), and the jump to the curve at t = 0.
        steepest = (self.max_users - self.min_users) * math.pi / self.day_s
        return max(self.planned_users(0.0), steepest)


def _shape_tag(value: Any) -> str | None:
    return value.get("shape") if isinstance(value, dict) else getattr(value, "shape", None)


LoadShape = Annotated[
    Annotated[Ramp, Tag("ramp")] | Annotated[Steps, Tag("steps")] | Annotated[Spike, Tag("spike")]
    | Annotated[Soak, Tag("soak")],
    # A callable discriminator, because only that one reports its own error type: an unknown or missing shape is
    # then named as such (the scenario loader rewrites pydantic's generic union-tag errors as "not a step").
    Discriminator(_shape_tag, custom_error_type="unknown_shape",
                  custom_error_message=f"not a load shape; give shape: one of {', '.join(SHAPES)}"),
]


def _nearest(users: float) -> int:
    # Half up rather than Python's round-half-to-even, so the count at a given t is obvious from the formula.
    return max(0, math.floor(users + 0.5))


def users_at(shape: LoadShape, t: float) -> tuple[int, float] | None:
    """What Locust's ``tick()`` returns at ``t`` seconds into the run: ``(users, spawn_rate)``, or None once the
    shape is over (``t >= total_s``), which stops the test. Users are the planned count rounded to the nearest
    whole call."""
    if not t >= 0:  # also refuses NaN
        raise ValueError(f"a run time is >= 0 s, got {t!r}")
    if t >= shape.total_s:
        return None
    return _nearest(shape.planned_users(t)), shape.effective_spawn_rate


def default_shape(callers_count: int, concurrency: int | None, arrival_rate: float, duration: float) -> LoadShape:
    """What a scenario without ``load:`` means under Locust: a ramp to ``concurrency or callers_count`` concurrent
    calls at ``arrival_rate`` new calls per second, then a hold until ``duration`` (the scenario's limits.duration).

    When the run ends before the ramp would, the ramp is cut at ``duration`` with its slope kept: the same calls
    arrive as under the asyncio engine, which places calls at ``arrival_rate`` until the run's end.
    """
    if callers_count < 1 or (concurrency is not None and concurrency < 1):
        raise ShapeError(f"a run needs at least one caller (count {callers_count}, concurrency {concurrency})")
    if not arrival_rate > 0:
        raise ShapeError(f"arrival_rate is a positive number of calls per second, got {arrival_rate!r}")
    duration = _seconds(duration)
    users = concurrency or callers_count
    ramp = users / arrival_rate
    if ramp >= duration:
        users = max(1, math.floor(arrival_rate * duration))
        return Ramp(users=users, ramp=duration, hold=0.0, spawn_rate=arrival_rate)
    return Ramp(users=users, ramp=ramp, hold=duration - ramp, spawn_rate=arrival_rate)
