"""Between gevent (Locust's greenlets) and the call engine's asyncio thread. Locust-only: imports gevent.

- the engine's thread is a real OS thread (gevent's original ``start_new_thread``), and its loop gets the original
  epoll selector: with gevent's patched selector the engine's thread would run a second gevent hub;
- a greenlet waits for an engine future without blocking the other greenlets: the future's completion is handed to
  the gevent hub with ``run_callback_threadsafe``, the one thread-safe way into a hub;
- events the engine emits reach the main thread the same way, in order.
"""

from __future__ import annotations

import concurrent.futures
import selectors
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.monkey

T = TypeVar("T")


def start_real_thread(body: Callable[[], None]) -> None:
    start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")
    start_new_thread(body, ())


def original_selector() -> selectors.BaseSelector:
    selector_class = gevent.monkey.get_original("selectors", "DefaultSelector")
    return selector_class()


class Hub:
    """The main thread's gevent hub, kept alive while it waits on the engine (a hub with nothing to watch would
    conclude that a wait can never end)."""

    def __init__(self) -> None:
        self.hub = gevent.get_hub()
        self._keeper = self.hub.loop.async_()
        self._keeper.start(lambda: None)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the main thread's hub; callable from any thread."""
        self.hub.loop.run_callback_threadsafe(fn, *args)

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Wait for an engine future in a greenlet; raises its exception, or ``gevent.Timeout`` after ``timeout``."""
        return self.result_of(future).get(timeout=timeout)

    def result_of(self, future: concurrent.futures.Future[T]) -> gevent.event.AsyncResult:
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()

        def transfer(done: concurrent.futures.Future[T]) -> None:
            if done.cancelled():
                result.set_exception(concurrent.futures.CancelledError())
            elif done.exception() is not None:
                result.set_exception(done.exception())
            else:
                result.set(done.result())

        future.add_done_callback(lambda done: self.call_soon(transfer, done))
        return result
