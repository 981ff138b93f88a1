"""The call engine of one load process: the same :class:`~harness.caller.Call` as ``voicechaos run``, on an asyncio
loop of its own OS thread.

Locust runs its users on gevent. Measured side by side in a gevent-patched process (``bench/locust_transports.py``),
an asyncio loop in a real thread beside gevent held the most calls per process within 5 ms p99 (150, against 125 for
``websockets.sync`` in greenlets and 50 for websocket-client), with less CPU per call, and it runs the very ``Call``
whose measurements are proven elsewhere, so
a Locust user only hands its call to this engine and waits for the record; ``bench/locust_capacity.py`` measures what
that costs beside the harness alone. This module knows nothing of gevent: the Locust side passes how to start a real
thread and how to make the loop's selector (gevent's patched ones would put a gevent hub inside the engine's thread),
and it bridges the futures back into greenlets.

Everything the engine emits (call and turn events, never frames) is passed to ``emit`` *on the engine's thread*.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
import threading
import time
from collections.abc import Callable, Coroutine
from random import Random
from typing import Any, TypeVar

import aiohttp

from harness.caller import Call, CallEnvironment, Dial, EventSink
from harness.clock import MonotonicClock
from harness.gcpause import GcWatch
from harness.lateness import LatenessHistogram
from harness.pacer import Pacer
from harness.records import CallRecord
from harness.scenario import Scenario
from harness.voice import Voice

T = TypeVar("T")
ThreadStarter = Callable[[Callable[[], None]], None]
#: call ids of a process start at process index x this, so ids stay unique across the workers of a run
CALL_ID_STRIDE = 10_000_000


def start_daemon_thread(body: Callable[[], None]) -> None:
    threading.Thread(target=body, name="voicechaos call engine", daemon=True).start()


class EngineStopped(RuntimeError):
    """The engine was asked to do something after it stopped."""


class CallEngine:
    def __init__(self, scenario: Scenario, *, process_index: int, emit: EventSink,
                 start_thread: ThreadStarter = start_daemon_thread,
                 selector_factory: Callable[[], selectors.BaseSelector] = selectors.DefaultSelector,
                 max_calls: int | None = None, seed_salt: str = "") -> None:
        self.scenario = scenario
        self.seed_salt = seed_salt or str(process_index)
        self.process_index = process_index
        self.emit = emit
        self.max_calls = max_calls
        self._start_thread = start_thread
        self._selector_factory = selector_factory
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock = MonotonicClock()
        self.pacer: Pacer | None = None
        self._env: CallEnvironment | None = None
        self._calls: dict[int, Call] = {}
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        #: hang-ups that arrived before their call's task first ran (a Locust user killed just after it dialled)
        self._early_hang_ups: dict[int, str] = {}
        self._ended_ids: set[int] = set()  # a few bytes a call; a process places at most max_calls
        #: calls placed before this many were hung up all at once (with this reason), started or not
        self._hung_up_before: tuple[int, str] = (0, "")
        self.placed = 0
        self.ended = 0
        self.gc_watch = GcWatch()
        self._stopped = False

    # --- lifecycle (called from the owner's thread) -------------------------------------------------------------------

    def start(self, sleep: Callable[[float], None] = time.sleep, timeout_s: float = 30.0) -> None:
        """Start the engine's thread and wait (with ``sleep``, which may be a greenlet's) until its loop runs."""
        self._start_thread(self._thread_main)
        deadline = time.monotonic() + timeout_s
        while self.loop is None or not self.loop.is_running() or self._env is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the call engine's event loop did not start")
            sleep(0.01)

    def _thread_main(self) -> None:
        loop = asyncio.SelectorEventLoop(self._selector_factory())
        asyncio.set_event_loop(loop)
        if threading.current_thread() is not threading.main_thread():
            # subprocesses (the embedded stack) from a loop outside the main thread: a pidfd watcher needs no
            # thread of its own and no signal handler (Linux 5.3+)
            with contextlib.suppress(NotImplementedError, OSError, AttributeError):
                watcher = asyncio.PidfdChildWatcher()
                watcher.attach_loop(loop)
                asyncio.set_child_watcher(watcher)
        self.loop = loop
        loop.call_soon(lambda: asyncio.ensure_future(self._prepare()))
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _prepare(self) -> None:
        scenario = self.scenario
        self.pacer = pacer = Pacer(self.clock)
        voice = Voice()
        voice.prepare(scenario.script)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        # each process its own random stream: the same seed on two workers would give both the same call SIDs
        rng = Random(f"{scenario.seed}-{self.seed_salt}")
        self._pacer_task = asyncio.create_task(pacer.run())
        self.gc_watch.__enter__()
        self._env = CallEnvironment(clock=self.clock, pacer=pacer, voice=voice, http=http, rng=rng, emit=self.emit)

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the engine's loop (from any thread)."""
        if self.loop is None or self._stopped:
            coro.close()
            raise EngineStopped("the call engine is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Cancel what is left, close the HTTP session and stop the loop (idempotent)."""
        if self._stopped or self.loop is None:
            return
        future = self.run(self._shutdown())
        self._stopped = True
        future.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.loop.stop) if self.loop else None)

    async def _shutdown(self) -> None:
        for call in list(self._calls.values()):
            call.stop_reason = call.stop_reason or "the load process stopped"
        self._pacer_task.cancel()
        self.gc_watch.__exit__(None, None, None)
        if self._env is not None:
            await self._env.http.close()

    # --- calls --------------------------------------------------------------------------------------------------------

    def place_call(self, dial: Dial) -> tuple[int, concurrent.futures.Future[CallRecord]] | None:
        """Start one call; returns its id and the future of its record, or None when ``max_calls`` were placed."""
        if self.max_calls is not None and self.placed >= self.max_calls:
            return None
        seq = self.placed
        call_id = self.process_index * CALL_ID_STRIDE + seq
        self.placed += 1
        return call_id, self.run(self._one_call(call_id, dial, seq))

    async def _one_call(self, call_id: int, dial: Dial, seq: int) -> CallRecord:
        assert self._env is not None
        scenario = self.scenario
        call = Call(self._env, call_id, scenario.script, scenario.limits, dial)
        self._calls[call_id] = call
        task = asyncio.current_task()
        assert task is not None
        self._tasks[call_id] = task
        early = self._early_hang_ups.pop(call_id, None)
        if early is None and seq < self._hung_up_before[0]:
            early = self._hung_up_before[1]
        if early is not None:  # stopped before it started: it starts, and ends at its first wait
            call.stop_reason = early
            task.cancel()
        try:
            return await call.run()
        except asyncio.CancelledError:
            return call.record  # the record is complete (outcome and reason set by the call itself)
        finally:
            self._calls.pop(call_id, None)
            self._tasks.pop(call_id, None)
            self._ended_ids.add(call_id)
            self.ended += 1

    def hang_up(self, call_id: int, reason: str) -> None:
        """Stop a call in progress (its record says why); a call already over is left alone. Any thread."""
        if self.loop is None:
            return

        def cancel() -> None:
            call, task = self._calls.get(call_id), self._tasks.get(call_id)
            if call is not None and task is not None:
                call.stop_reason = reason
                task.cancel()
            elif call_id not in self._ended_ids:
                # placed, but its task has not run yet (the task is created and first run by callbacks queued
                # before and after this one): without this the hang-up would be lost and the call run to its end
                self._early_hang_ups[call_id] = reason

        self.loop.call_soon_threadsafe(cancel)

    def hang_up_all(self, reason: str) -> None:
        """Stop every call placed so far, in progress or not yet started; calls placed later are not touched (the
        web UI can start another test in the same process). From the thread that places calls."""
        if self.loop is None:
            return
        placed = self.placed

        def cancel_all() -> None:
            self._hung_up_before = (placed, reason)
            for call_id, task in list(self._tasks.items()):
                self._calls[call_id].stop_reason = reason
                task.cancel()

        self.loop.call_soon_threadsafe(cancel_all)

    @property
    def active(self) -> int:
        return len(self._calls)

    # --- measurements -------------------------------------------------------------------------------------------------

    async def lateness_snapshot(self) -> tuple[LatenessHistogram, dict[str, Any]]:
        """A copy of this process's cumulative pacing lateness and its collector pauses, taken on the loop."""
        copy = LatenessHistogram()
        if self.pacer is not None:
            copy.merge(self.pacer.lateness)
        return copy, self.gc_watch.summary()
