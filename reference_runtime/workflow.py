"""The :class:`WorkflowClient` seam: business events from the dialog ("appointment_booked") to CRM/calendar
systems.

Today the call awaits ``emit`` inside the turn, before asking the LLM: with a slow workflow API the caller
hears silence (incident 3, the broken way). The safeguards issue supplies a client whose ``emit`` only
enqueues (< 5 ms) and delivers in the background, without changing the call.

Contract: ``emit`` raises :class:`WorkflowError` on failure; the call logs and counts it and carries on
talking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from reference_runtime.dialog import WorkflowEvent

log = logging.getLogger(__name__)


class WorkflowError(Exception):
    pass


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
                    raise WorkflowError(f"{self._url} answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise WorkflowError(f"{self._url}: {error!r}") from error
