"""The locustfile of voicechaos: ``voicechaos ui|soak|worker SCENARIO`` start Locust with it.

One Locust user is one caller: it places a call with the harness's call engine (the same ``Call`` as
``voicechaos run``), waits for it to end, and after ``redial_after_s`` places the next. So Locust's "users" are the
calls in progress. The scenario comes from ``VOICECHAOS_LOAD`` (see :mod:`harness.load.settings`), read at import:
with ``use_shape`` its load shape (or the default ramp) becomes this file's ``LoadTestShape``.

This module is the Locust composition root: Locust imports it and owns its ``Environment``; everything of the run
hangs off ``environment.voicechaos`` (a :class:`~harness.load.node.LoadNode`), created in the ``init`` event.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser

from harness.load.locust_shapes import PlannedShape
from harness.load.node import LoadNode
from harness.load.settings import settings_from_env
from harness.load.shapes import default_shape, users_at
from harness.scenario import load_scenario

SETTINGS = settings_from_env()
SCENARIO = load_scenario(SETTINGS.scenario)
#: how long a stopped caller waits for its call's record (the call is hung up first)
HANG_UP_WAIT_S = 10.0
STOP_ALL_RATE = 10_000.0


@events.init_command_line_parser.add_listener
def _arguments(parser: Any, **_: Any) -> None:
    # set by the master once its stack is up, and sent to every worker with each spawn message
    parser.add_argument("--voicechaos-dial", default="", include_in_web_ui=False,
                        help="(internal) where calls go: set by the voicechaos master")


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    node = LoadNode(environment, SETTINGS, SCENARIO)
    environment.voicechaos = node  # type: ignore[attr-defined]
    node.start()


class Caller(User):
    """A simulated phone caller, call after call."""

    wait_time = constant(SETTINGS.redial_after_s)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._in_call: tuple[int, Any] | None = None

    @task
    def call(self) -> None:
        node: LoadNode = self.environment.voicechaos  # type: ignore[attr-defined]
        placed = node.place_call()
        if placed is None:  # this process placed --max-calls calls
            raise StopUser()
        self._in_call = placed
        placed[1].get()
        self._in_call = None

    def on_stop(self) -> None:
        """Stopped mid-call (a ramp-down past the stop timeout, the end of the run): hang up, and wait for the
        record so that it is counted (and sent to the master) before this user is gone."""
        if self._in_call is None:
            return
        node: LoadNode = self.environment.voicechaos  # type: ignore[attr-defined]
        call_id, result = self._in_call
        self._in_call = None
        node.hang_up(call_id, "the load stopped (Locust stopped this caller)")
        try:
            result.get(timeout=HANG_UP_WAIT_S)
        except gevent.Timeout:  # its record still reaches the run: the process settles every call before it closes
            print(f"voicechaos: call {call_id} had not ended {HANG_UP_WAIT_S:g} s after its hang-up", flush=True)
        except Exception as exc:  # a harness error in the call: say so; the user is stopping anyway
            print(f"voicechaos: call {call_id} failed while stopping: {exc!r}", flush=True)


if SETTINGS.use_shape:
    _plan = SCENARIO.load or default_shape(SCENARIO.callers.count, SCENARIO.callers.concurrency,
                                           SCENARIO.callers.arrival_rate, SCENARIO.limits.duration)
    if SETTINGS.duration_s is not None and abs(SETTINGS.duration_s - _plan.total_s) > 1e-6:
        _plan = _plan.with_duration(SETTINGS.duration_s)

    class VoiceLoad(PlannedShape):
        """The scenario's load shape. After its end it holds zero callers: voicechaos, not Locust, ends the run,
        so that calls in progress finish and every worker's last records reach the master first."""

        plan = _plan

        def tick(self) -> tuple[int, float] | None:
            # after the end, every caller at once: one stopped at the shape's own rate could redial meanwhile
            return users_at(self.plan, self.get_run_time()) or (0, STOP_ALL_RATE)
