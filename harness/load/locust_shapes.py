"""Locust adapters for :mod:`harness.load.shapes`: one ``LoadTestShape`` subclass per scenario shape.

Locust-only: this module imports locust, which monkey-patches the whole process with gevent, so only the Locust
entry point (the locustfile the harness hands to Locust) imports it. The plan itself lives in shapes.py; ``tick()``
here is one line, so everything worth testing is tested without Locust's clock.

Locust finds a shape by scanning the locustfile's globals for a non-abstract ``LoadTestShape`` subclass and
instantiates it with no arguments, on the master. The entry point therefore does::

    VoiceLoad = shape_class(scenario.load or default_shape(...), "VoiceLoad")
"""

from __future__ import annotations

from typing import ClassVar

from locust import LoadTestShape

from harness.clock import Clock, MonotonicClock
from harness.load.shapes import LoadShape, users_at


class PlannedShape(LoadTestShape):
    """A Locust shape whose ``tick()`` is :func:`~harness.load.shapes.users_at` of its ``plan`` at the run time.

    The clock is injected (a :class:`~harness.clock.Clock`; Locust passes none and gets the monotonic clock), so a
    test moves a :class:`~harness.clock.ManualClock` to ask what the shape says at any instant. Overriding
    ``get_run_time`` on an instance works too, as it does for any Locust shape.
    """

    # Locust's metaclass marks every subclass concrete unless it says otherwise; this base has no plan.
    abstract: ClassVar[bool] = True
    plan: ClassVar[LoadShape]

    def __init__(self, clock: Clock | None = None) -> None:
        # Not super().__init__(): it reads time.perf_counter; the run time here comes from the injected clock.
        self._clock = clock or MonotonicClock()
        self.start_time = self._clock.now()

    def reset_time(self) -> None:
        """Locust calls this when the test (re)starts: run time counts from here."""
        self.start_time = self._clock.now()

    def get_run_time(self) -> float:
        return self._clock.now() - self.start_time

    def tick(self) -> tuple[int, float] | None:
        return users_at(self.plan, self.get_run_time())


def shape_class(shape: LoadShape, name: str) -> type[PlannedShape]:
    """A concrete ``LoadTestShape`` subclass called ``name`` that follows ``shape``.

    ``name`` is what Locust shows and what ``--class-picker`` lists; it must be a Python identifier.
    """
    if not name.isidentifier():
        raise ValueError(f"a shape class name is a Python identifier, got {name!r}")
    doc = f"{type(shape).__name__} load shape: {shape.total_s:g} s (harness.load.shapes)."
    return type(name, (PlannedShape,), {"plan": shape, "__doc__": doc, "__qualname__": name})
