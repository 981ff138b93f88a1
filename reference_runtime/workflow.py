"""The :class:`WorkflowClient` seam: business events from the dialog ("appointment_booked") to CRM/calendar
systems, and the :class:`WorkflowWorker` that keeps them out of the conversation (safeguard 3).

Broken way (incident 3, Voiceflow): the call awaits ``WorkflowClient.emit`` inside the turn, before asking the
LLM; with a CRM answering in 1-3 s the caller hears that long a silence.

Fixed way: the call hands the event to :meth:`WorkflowWorker.emit`, which only appends it to a bounded
in-process queue (microseconds, never blocks, never raises) and returns; the worker's own tasks deliver it with
the same client, behind a :class:`~reference_runtime.breaker.CircuitBreaker`, retrying with exponential backoff.
A workflow failure is counted and logged by the worker and never reaches the call.

The worker's contract:
- ``emit`` is synchronous and O(1). A full queue drops the *new* event (the ones already accepted keep their
  place and their retries) and counts it as ``dropped{reason="queue_full"}``.
- At most ``concurrency`` events are being delivered at a time (an event waiting out its backoff holds its slot:
  a failing CRM is not hammered harder because events pile up).
- Each event gets up to ``max_attempts`` attempts. An attempt the breaker refuses costs no request but counts as
  a failed attempt (``reason="breaker_open"``), so an event does not wait forever on a CRM that stays down.
- Delivery is at least once (a timed-out request may have reached the CRM and is sent again) and events of one
  call may overtake each other when one of them is retried.
- :meth:`stop` stops accepting, drains what it can within a timeout, then cancels the rest and counts each
  undelivered event as ``dropped{reason="shutdown"}`` (and logs it): nothing is lost silently.

Client contract: ``emit`` raises :class:`WorkflowError` on failure (with a ``reason`` for the metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from harness.clock import Clock
from reference_runtime.breaker import BreakerState, CircuitBreaker
from reference_runtime.config import WorkflowConfig
from reference_runtime.dialog import WorkflowEvent

log = logging.getLogger(__name__)


class WorkflowError(Exception):
    """A workflow API failed; ``reason`` is ``http_<status>``, ``timeout``, ``connection`` or ``error``."""

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallContext:
    call_sid: str
    stream_sid: str
    caller: str


class WorkflowClient(Protocol):
    async def emit(self, event: WorkflowEvent, call: CallContext) -> None: ...


class LoggingWorkflowClient:
    """No workflow configured: the event is logged (and kept, for tests) and nothing else happens."""

    def __init__(self) -> None:
        self.events: list[tuple[WorkflowEvent, CallContext]] = []

    async def emit(self, event: WorkflowEvent, call: CallContext) -> None:
        self.events.append((event, call))
        del self.events[:-100]
        log.info("workflow event %s for call %s (no workflow url configured)", event.name, call.call_sid)


class HttpWorkflowClient:
    """POSTs ``{"event", "objective", "data", "call_sid", "stream_sid", "caller"}`` to the configured URL."""

    def __init__(self, url: str, session: aiohttp.ClientSession, *, timeout_s: float) -> None:
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def emit(self, event: WorkflowEvent, call: CallContext) -> None:
        body = {
            "event": event.name,
            "objective": event.objective,
            "data": event.data,
            "call_sid": call.call_sid,
            "stream_sid": call.stream_sid,
            "caller": call.caller,
        }
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as response:
                if response.status >= 300:
                    raise WorkflowError(
                        f"{self._url} answered HTTP {response.status}", reason=f"http_{response.status}"
                    )
        except TimeoutError as error:  # aiohttp's ServerTimeoutError is a TimeoutError too
            raise WorkflowError(f"{self._url}: timed out", reason="timeout") from error
        except aiohttp.ClientConnectionError as error:
            raise WorkflowError(f"{self._url}: {error!r}", reason="connection") from error
        except aiohttp.ClientError as error:
            raise WorkflowError(f"{self._url}: {error!r}") from error


# --- the worker (fixed mode) --------------------------------------------------------------------------------


class WorkflowObserver(Protocol):
    """What the worker reports (implemented by :class:`~reference_runtime.metrics.RuntimeMetrics`)."""

    def workflow_delivered(self, seconds: float) -> None:
        """An event reached the workflow API, ``seconds`` after it was emitted."""
        ...

    def workflow_failed(self, seconds: float) -> None:
        """An event was given up after its last attempt, ``seconds`` after it was emitted."""
        ...

    def workflow_attempt_failed(self, reason: str) -> None: ...

    def workflow_retried(self) -> None: ...

    def workflow_dropped(self, reason: str) -> None:
        """An event was never delivered: ``queue_full`` (refused at emission) or ``shutdown``."""
        ...

    def workflow_backlog(self, queued: int, in_flight: int) -> None: ...

    def workflow_breaker_changed(self, old: BreakerState, new: BreakerState) -> None: ...


@dataclass(frozen=True, slots=True)
class PendingEvent:
    event: WorkflowEvent
    call: CallContext
    #: on the worker's clock: delivery latency is measured from here
    emitted_at: float


Sleep = Callable[[float], Awaitable[None]]


class WorkflowWorker:
    """Delivers workflow events in the background; see the module docstring for the contract."""

    def __init__(
        self,
        client: WorkflowClient,
        *,
        clock: Clock,
        observer: WorkflowObserver,
        queue_size: int = 1000,
        concurrency: int = 16,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 5.0,
        breaker_failures: int = 5,
        breaker_reset_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if queue_size < 1 or concurrency < 1 or max_attempts < 1:
            raise ValueError("queue_size, concurrency and max_attempts must be >= 1")
        self.client = client
        self._clock = clock
        self._observer = observer
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(maxsize=queue_size)
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.breaker = CircuitBreaker(
            "workflow",
            clock=clock,
            failure_threshold=breaker_failures,
            reset_after_s=breaker_reset_s,
            on_change=lambda _name, old, new: observer.workflow_breaker_changed(old, new),
        )
        self._consumers: list[asyncio.Task[None]] = []
        #: the event each delivery task is working on
        self._in_flight: dict[asyncio.Task[None], PendingEvent] = {}
        self._accepting = True

    @classmethod
    def from_config(
        cls, config: WorkflowConfig, client: WorkflowClient, *, clock: Clock, observer: WorkflowObserver
    ) -> WorkflowWorker:
        return cls(
            client,
            clock=clock,
            observer=observer,
            queue_size=config.queue_size,
            concurrency=config.concurrency,
            max_attempts=config.max_attempts,
            backoff_s=config.retry_backoff_s,
            backoff_max_s=config.retry_backoff_max_s,
            breaker_failures=config.breaker.failure_threshold,
            breaker_reset_s=config.breaker.reset_after_s,
        )

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def start(self) -> None:
        """Start the delivery tasks (inside the running loop)."""
        if self._consumers:
            return
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"workflow-worker-{n}") for n in range(self._concurrency)
        ]

    def emit(self, event: WorkflowEvent, call: CallContext) -> bool:
        """Queue ``event`` for delivery and return at once; ``False`` when it was dropped (full, or stopping)."""
        item = PendingEvent(event, call, self._clock.now())
        if not self._accepting:
            self._drop(item, "shutdown")
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._drop(item, "queue_full")
            return False
        self._report_backlog()
        return True

    async def join(self) -> None:
        """Wait until every accepted event has been delivered or given up."""
        await self._queue.join()

    async def stop(self, timeout_s: float) -> int:
        """Stop accepting events, give the queued and in-flight ones ``timeout_s`` to be delivered, then cancel
        the rest; returns how many were left undelivered (each counted as dropped and logged)."""
        self._accepting = False
        if self._consumers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.join(), timeout=timeout_s)
        left = list(self._in_flight.values())
        for task in self._consumers:
            task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumers.clear()
        self._in_flight.clear()
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        for item in left:
            self._drop(item, "shutdown")
        self._report_backlog()
        return len(left)

    # --- delivery -------------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while True:
            item = await self._queue.get()
            self._in_flight[me] = item
            self._report_backlog()
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a client breaking its contract must not kill the worker
                log.exception("workflow event %s for call %s: delivery crashed", item.event.name, item.call.call_sid)
                self._observer.workflow_attempt_failed("error")
                self._observer.workflow_failed(max(0.0, self._clock.now() - item.emitted_at))
            finally:
                del self._in_flight[me]
                self._queue.task_done()
                self._report_backlog()

    async def _deliver(self, item: PendingEvent) -> None:
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self._observer.workflow_retried()
            if self.breaker.allow():
                try:
                    await self.client.emit(item.event, item.call)
                except WorkflowError as error:
                    self.breaker.failure()
                    self._observer.workflow_attempt_failed(error.reason)
                    log.warning(
                        "workflow event %s for call %s: attempt %d/%d failed: %s",
                        item.event.name, item.call.call_sid, attempt, self._max_attempts, error,
                    )
                else:
                    self.breaker.success()
                    self._observer.workflow_delivered(max(0.0, self._clock.now() - item.emitted_at))
                    return
            else:
                self._observer.workflow_attempt_failed("breaker_open")
            if attempt < self._max_attempts:
                await self._sleep(self.backoff(attempt))
        log.warning(
            "workflow event %s for call %s: given up after %d attempts",
            item.event.name, item.call.call_sid, self._max_attempts,
        )
        self._observer.workflow_failed(max(0.0, self._clock.now() - item.emitted_at))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
        return min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1))

    def _drop(self, item: PendingEvent, reason: str) -> None:
        log.warning(
            "workflow event %s for call %s dropped (%s): never delivered",
            item.event.name, item.call.call_sid, reason,
        )
        self._observer.workflow_dropped(reason)

    def _report_backlog(self) -> None:
        self._observer.workflow_backlog(self.queued, self.in_flight)
