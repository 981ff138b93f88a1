"""Server-side production metrics, in a per-app Prometheus ``CollectorRegistry`` (never the global one, so two
runtimes in one test process do not collide). Caller-facing measurements are the harness's job.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` / ``_bytes`` units). Every failure is
counted by the code that saw it: a provider client that got the 429 (``count_error``), the recording sink whose
upload timed out (``upload_failed``), the call that caught the workflow's error. The chaos report reads these to
tell an injected fault that was felt from one that was absorbed. The list, with labels, is in the README.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from typing import ClassVar, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reference_runtime.providers.base import Service

CONTENT_TYPE = CONTENT_TYPE_LATEST


class SpoolStats(Protocol):
    """What the spool gauges read (reference_runtime/spool.py's Spool)."""

    @property
    def entries(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def oldest_age_s(self) -> float: ...


class CallMemoryStats(Protocol):
    """What the retained-buffer gauges read (reference_runtime/memory.py's CallMemoryLedger)."""

    @property
    def retained_calls(self) -> int: ...

    @property
    def retained_bytes(self) -> int: ...
# fine around the provider targets (150 ms, alert 300 ms): a quantile is interpolated inside one bucket
_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                    5.0, 10.0)


def process_rss_bytes() -> float:
    """Current resident set size (``/proc/self/statm``); peak RSS from ``getrusage`` where /proc is
    missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


class RuntimeMetrics:
    """Also the :class:`~reference_runtime.providers.base.ProviderObserver` every provider reports to."""

    def __init__(
        self,
        *,
        active_calls: Callable[[], float],
        capacity: Callable[[], float],
        ready: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("runtime_active_calls", "Calls in progress in this process.", registry=r).set_function(
            active_calls
        )
        Gauge("runtime_capacity", "Concurrent calls this process accepts.", registry=r).set_function(capacity)
        Gauge(
            "runtime_ready", "1 while accepting new calls, 0 when full or draining.", registry=r
        ).set_function(ready)
        Gauge(
            "runtime_process_resident_memory_bytes", "Resident memory of the process.", registry=r
        ).set_function(process_rss_bytes)
        self.calls = Counter("runtime_calls", "Calls by outcome.", ["outcome"], registry=r)
        self.turns = Counter("runtime_turns", "Caller turns answered.", registry=r)
        self.barge_ins = Counter("runtime_barge_ins", "Agent speech interrupted by the caller.", registry=r)
        self.stt_latency = Histogram(
            "runtime_stt_final_latency_seconds",
            "From sending audio to receiving the final transcript covering it.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_latency = Histogram(
            "runtime_llm_first_token_seconds",
            "From sending the chat request to the first streamed token.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tts_latency = Histogram(
            "runtime_tts_first_byte_seconds",
            "From sending the text to the first audio byte.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter(
            "runtime_provider_errors",
            "Provider failures, counted by the client that saw them. reason: http_<status> (refused, e.g. http_429), "
            "connect, timeout, transport, send, dropped, bad_message, stream_error, truncated.",
            ["service", "provider", "reason"],
            registry=r,
        )
        # Workflow isolation (safeguard 3). Failure rate = failed / (ok + failed), the same in both modes.
        self.workflow_events = Counter(
            "runtime_workflow_events",
            "Workflow events by outcome: ok (delivered to the workflow API), failed (given up: the call's emit "
            "raised in broken mode, every attempt failed in fixed mode).",
            ["outcome"],
            registry=r,
        )
        self.workflow_latency = Histogram(
            "runtime_workflow_emit_seconds",
            "Time the call spent emitting a workflow event: the whole API call when broken, the enqueue when fixed.",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
            registry=r,
        )
        self.workflow_delivery_latency = Histogram(
            "runtime_workflow_delivery_seconds",
            "From a workflow event's emission to its delivery (outcome ok) or its last failed attempt (failed); "
            "fixed mode, retries included.",
            ["outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.workflow_attempt_failures = Counter(
            "runtime_workflow_attempt_failures",
            "Failed workflow delivery attempts by reason: http_<status>, timeout, connection, breaker_open, error.",
            ["reason"],
            registry=r,
        )
        self.workflow_retries = Counter(
            "runtime_workflow_retries", "Workflow delivery attempts after an event's first.", registry=r
        )
        self.workflow_drops = Counter(
            "runtime_workflow_dropped",
            "Workflow events never delivered: queue_full (refused at emission), shutdown (left at exit).",
            ["reason"],
            registry=r,
        )
        self.workflow_queue_depth = Gauge(
            "runtime_workflow_queue_depth", "Workflow events waiting for delivery.", registry=r
        )
        self.workflow_in_flight = Gauge(
            "runtime_workflow_in_flight", "Workflow events being delivered (backoff waits included).", registry=r
        )
        self.workflow_breaker_open = Gauge(
            "runtime_workflow_breaker_open", "1 while the workflow API's breaker is not closed.", registry=r
        )
        self.workflow_breaker_trips = Counter(
            "runtime_workflow_breaker_trips", "Times the workflow API's breaker opened.", registry=r
        )
        for outcome in ("ok", "failed"):  # a probe reading before and after a fault sees 0, not a missing series
            self.workflow_events.labels(outcome=outcome)
        for reason in ("queue_full", "shutdown"):
            self.workflow_drops.labels(reason=reason)
        # Tool calls (safeguard 6)
        self.tool_latency = Histogram(
            "runtime_tool_seconds",
            "From calling a tool to its result (the turn waits all of it when broken).",
            ["tool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_fillers = Counter(
            "runtime_tool_fillers",
            "Fillers spoken while tools ran, by trigger: expected (known slow tool, at once), timer (no answer yet).",
            ["trigger"],
            registry=r,
        )
        for trigger in ("expected", "timer"):
            self.tool_fillers.labels(trigger=trigger)
        self.tool_late_results = Counter(
            "runtime_tool_results_late",
            "Tool results that arrived after their turn carried on, kept for the next turn's LLM request.",
            ["tool"],
            registry=r,
        )
        self.tool_turn_first_audio = Histogram(
            "runtime_tool_turn_first_audio_seconds",
            "Turns that ran a tool: from the caller's turn (endpointed) to the first agent audio sent.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.recordings = Counter(
            "runtime_recordings", "Recordings handed to the sink, by outcome.", ["outcome"], registry=r
        )
        self.recording_latency = Histogram(
            "runtime_recording_store_seconds",
            "Time a call's worker slot waited for the recording sink.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.tool_calls = Counter(
            "runtime_tool_calls",
            "Tool calls by outcome: ok, or error when the ToolRunner answered an {\"error\": ...} result.",
            ["tool", "outcome"],
            registry=r,
        )
        # The object-store side of recordings (S3RecordingSink), counted by the sink's upload thread. A failed
        # upload is also a lost recording in runtime_recordings_total{outcome="lost"}; these say why.
        self.recordings_uploaded = Counter(
            "runtime_recordings_uploaded", "Recordings whose objects all reached the object store.", registry=r
        )
        self.recording_upload_errors = Counter(
            "runtime_recording_upload_errors",
            "Recording uploads that failed after botocore's attempts, by reason (timeout, connection, http_<status>, "
            "client, error); broken: the recording is lost, fixed (spool): it is retried later.",
            ["reason"],
            registry=r,
        )
        for reason in ("timeout", "connection"):  # the incident-1 reasons read 0, not "absent", until they happen
            self.recording_upload_errors.labels(reason=reason)
        self.recording_upload_latency = Histogram(
            "runtime_recording_upload_seconds",
            "Time one recording's upload took (all its objects, retries included), by outcome.",
            ["outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.recording_upload_bytes = Counter(
            "runtime_recording_uploaded_bytes", "Bytes of recordings stored in the object store.", registry=r
        )
        # The recording spool and its background uploader (safeguard 1, fixed; reference_runtime/spool.py). There a
        # failed upload (runtime_recording_upload_errors_total) is retried later, not lost.
        self.recordings_spooled = Counter(
            "runtime_recordings_spooled", "Recordings written to the durable local spool at call end.", registry=r
        )
        self.recordings_spool_refused = Counter(
            "runtime_recordings_spool_refused",
            "Recordings the spool could not take, by reason (full: recording.spool.max_bytes; io_error); lost.",
            ["reason"],
            registry=r,
        )
        self.spool_entries = Gauge(
            "runtime_recording_spool_entries", "Recordings in the spool waiting for upload.", registry=r
        )
        self.spool_bytes = Gauge("runtime_recording_spool_bytes", "Bytes in the spool waiting for upload.", registry=r)
        self.spool_oldest_age = Gauge(
            "runtime_recording_spool_oldest_age_seconds",
            "How long the oldest spooled recording has waited for upload (0 when the spool is empty).",
            registry=r,
        )
        self.recording_breaker_open = Gauge(
            "runtime_recording_breaker_open", "1 while the recording uploader's breaker is not closed.", registry=r
        )
        self.recording_breaker_trips = Counter(
            "runtime_recording_breaker_trips", "Times the recording uploader's breaker opened.", registry=r
        )
        # Worker health (safeguard 5; reference_runtime/memory.py): the memory monitor's last sample against the
        # budget, its alerts, the drain, and what finished calls leave in memory. process_* come from
        # prometheus_client's process collector (CPU seconds, RSS, open fds).
        ProcessCollector(registry=r)
        self.memory_budget = Gauge("runtime_memory_budget_bytes", "The memory budget (memory.budget_mb).", registry=r)
        self.memory_fraction = Gauge(
            "runtime_memory_budget_fraction", "RSS / memory budget at the monitor's last sample.", registry=r
        )
        self.memory_alerts = Counter(
            "runtime_memory_alerts", "Times RSS crossed memory.alert_fraction of the budget (fixed mode).", registry=r
        )
        self.memory_alerting = Gauge(
            "runtime_memory_alert", "1 while RSS is above the alert line (fixed mode).", registry=r
        )
        self.cpu_percent = Gauge(
            "runtime_process_cpu_percent",
            "CPU used by the process over the monitor's last interval, in percent of one core.",
            registry=r,
        )
        self.draining = Gauge("runtime_draining", "1 once the process stopped taking calls to exit.", registry=r)
        self.drains = Counter(
            "runtime_drains", "Drains started, by reason: memory (the safeguard), signal (SIGTERM/SIGINT).",
            ["reason"], registry=r,
        )
        self.retained_calls = Gauge(
            "runtime_call_buffers_retained",
            "Finished calls whose audio buffers are still in memory (weak references: measured, not booked).",
            registry=r,
        )
        self.retained_bytes = Gauge(
            "runtime_call_buffers_retained_bytes", "Bytes of finished calls' audio buffers still in memory.",
            registry=r,
        )
        # Safeguard 4 (provider resilience): per-provider health, breakers and fallbacks.
        self.stt_first_result = Histogram(
            "runtime_stt_first_result_seconds",
            "From sending audio to the first result with words of an utterance (usually an interim).",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "runtime_breaker_state",
            "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open.",
            ["provider", "role"],
            registry=r,
        )
        self.breaker_trips = Counter(
            "runtime_breaker_trips",
            "Times a provider's breaker opened (from closed, or again from half-open).",
            ["provider", "role"],
            registry=r,
        )
        self.provider_fallbacks = Counter(
            "runtime_provider_fallbacks",
            "Requests (or STT streams) that moved from one provider (failed, or skipped while its breaker was open) "
            "to the next one of the chain.",
            ["role", "from", "to"],
            registry=r,
        )
        self._latency = {"stt": self.stt_latency, "llm": self.llm_latency, "tts": self.tts_latency}

    # ProviderObserver
    def observe_latency(self, service: Service, provider: str, seconds: float) -> None:
        self._latency[service].labels(provider=provider).observe(max(0.0, seconds))

    def count_error(self, service: Service, provider: str, reason: str) -> None:
        self.provider_errors.labels(service=service, provider=provider, reason=reason).inc()

    def observe_first_result(self, service: Service, provider: str, seconds: float) -> None:
        if service == "stt":
            self.stt_first_result.labels(provider=provider).observe(max(0.0, seconds))

    # ResilienceObserver (providers/resilience.py: the breaker of each provider, the fallback chains)
    _BREAKER_STATES: ClassVar[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}

    def breaker_registered(self, role: Service, provider: str, state: Callable[[], str]) -> None:
        # read at each scrape: an open breaker turns half-open by time alone, with no event to report it
        self.breaker_state.labels(provider=provider, role=role).set_function(
            lambda: float(self._BREAKER_STATES.get(str(state()), 2))
        )
        self.breaker_trips.labels(provider=provider, role=role)

    def breaker_changed(self, role: Service, provider: str, old: str, new: str) -> None:
        if str(new) == "open":
            self.breaker_trips.labels(provider=provider, role=role).inc()

    def fallback_used(self, role: Service, from_provider: str, to_provider: str) -> None:
        self.provider_fallbacks.labels(role=role, **{"from": from_provider, "to": to_provider}).inc()

    # RecordingObserver (called from the S3 sink's upload threads; prometheus_client metrics are thread-safe)
    def upload_succeeded(self, seconds: float, nbytes: int) -> None:
        self.recordings_uploaded.inc()
        self.recording_upload_bytes.inc(nbytes)
        self.recording_upload_latency.labels(outcome="uploaded").observe(max(0.0, seconds))

    def upload_failed(self, reason: str, seconds: float) -> None:
        self.recording_upload_errors.labels(reason=reason).inc()
        self.recording_upload_latency.labels(outcome="failed").observe(max(0.0, seconds))

    # WorkflowObserver (the workflow worker, fixed mode)
    def workflow_delivered(self, seconds: float) -> None:
        self.workflow_events.labels(outcome="ok").inc()
        self.workflow_delivery_latency.labels(outcome="ok").observe(max(0.0, seconds))

    def workflow_failed(self, seconds: float) -> None:
        self.workflow_events.labels(outcome="failed").inc()
        self.workflow_delivery_latency.labels(outcome="failed").observe(max(0.0, seconds))

    def workflow_attempt_failed(self, reason: str) -> None:
        self.workflow_attempt_failures.labels(reason=reason).inc()

    def workflow_retried(self) -> None:
        self.workflow_retries.inc()

    def workflow_dropped(self, reason: str) -> None:
        self.workflow_drops.labels(reason=reason).inc()

    def workflow_backlog(self, queued: int, in_flight: int) -> None:
        self.workflow_queue_depth.set(queued)
        self.workflow_in_flight.set(in_flight)

    def workflow_breaker_changed(self, old: str, new: str) -> None:
        self.workflow_breaker_open.set(0 if new == "closed" else 1)
        if new == "open":
            self.workflow_breaker_trips.inc()

    # SpoolObserver (the recording spool and its uploader)
    def spooled(self, nbytes: int) -> None:
        self.recordings_spooled.inc()

    def spool_refused(self, reason: str) -> None:
        self.recordings_spool_refused.labels(reason=reason).inc()

    def recording_breaker_changed(self, old: str, new: str) -> None:
        self.recording_breaker_open.set(0 if new == "closed" else 1)
        if new == "open":
            self.recording_breaker_trips.inc()

    def watch_spool(self, spool: SpoolStats) -> None:
        self.spool_entries.set_function(lambda: spool.entries)
        self.spool_bytes.set_function(lambda: spool.nbytes)
        self.spool_oldest_age.set_function(spool.oldest_age_s)

    # MemoryObserver (the memory monitor) and the call-memory ledger
    def memory_sampled(self, rss_bytes: float, budget_bytes: float, cpu_percent: float | None) -> None:
        self.memory_budget.set(budget_bytes)
        self.memory_fraction.set(rss_bytes / budget_bytes if budget_bytes > 0 else 0.0)
        if cpu_percent is not None:
            self.cpu_percent.set(cpu_percent)

    def memory_alert(self, active: bool) -> None:
        self.memory_alerting.set(1 if active else 0)
        if active:
            self.memory_alerts.inc()

    def watch_call_memory(self, ledger: CallMemoryStats) -> None:
        self.retained_calls.set_function(lambda: ledger.retained_calls)
        self.retained_bytes.set_function(lambda: ledger.retained_bytes)

    def drain_started(self, reason: str) -> None:
        self.draining.set(1)
        self.drains.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
