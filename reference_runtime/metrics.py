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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reference_runtime.providers.base import Service

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


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
        self.workflow_events = Counter(
            "runtime_workflow_events",
            "Workflow events by outcome: ok (WorkflowClient.emit returned), failed (it raised WorkflowError).",
            ["outcome"],
            registry=r,
        )
        self.workflow_latency = Histogram(
            "runtime_workflow_emit_seconds",
            "Time the call spent in WorkflowClient.emit.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.tool_latency = Histogram(
            "runtime_tool_seconds",
            "Time a turn waited for a tool.",
            ["tool"],
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
            "Recording uploads that failed after all attempts, by reason (timeout, connection, http_<status>, "
            "client).",
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
        self._latency = {"stt": self.stt_latency, "llm": self.llm_latency, "tts": self.tts_latency}

    # ProviderObserver
    def observe_latency(self, service: Service, provider: str, seconds: float) -> None:
        self._latency[service].labels(provider=provider).observe(max(0.0, seconds))

    def count_error(self, service: Service, provider: str, reason: str) -> None:
        self.provider_errors.labels(service=service, provider=provider, reason=reason).inc()

    # RecordingObserver (called from the S3 sink's upload threads; prometheus_client metrics are thread-safe)
    def upload_succeeded(self, seconds: float, nbytes: int) -> None:
        self.recordings_uploaded.inc()
        self.recording_upload_bytes.inc(nbytes)
        self.recording_upload_latency.labels(outcome="uploaded").observe(max(0.0, seconds))

    def upload_failed(self, reason: str, seconds: float) -> None:
        self.recording_upload_errors.labels(reason=reason).inc()
        self.recording_upload_latency.labels(outcome="failed").observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
