"""The runtime's side of the wire: its Prometheus ``/metrics``, read every few seconds during a run.

The callers measure what a person hears; the runtime's own metrics say what the operator sees (RSS against the
memory budget, breaker states and trips, workflow emission and delivery latency, spool depth...). Each reading goes
to ``runtime_metrics.jsonl`` in the run folder (seconds after the load started, and every sample by
``name{labels}``), so the report can plot them over time; the last reading is kept for the summary.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, float]


def parse_samples(text: str, prefixes: tuple[str, ...] = ("runtime_", "process_")) -> Samples:
    """Every sample of the exposition whose name starts with one of ``prefixes``, keyed ``name{k="v",...}`` with
    the labels sorted (so the same series always has the same key)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(prefixes) or sample.name.endswith("_created"):
                continue  # _created: when a counter was made, not a measurement
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def _labels_of(key: str) -> dict[str, str]:
    if "{" not in key:
        return {}
    inner = key[key.index("{") + 1 : -1]
    out = {}
    for part in inner.split('",'):
        name, _, value = part.partition('="')
        out[name] = value.rstrip('"')
    return out


def series(samples: Mapping[str, float], name: str, **labels: str) -> dict[str, float]:
    """The samples of metric ``name`` whose labels include ``labels``."""
    found = {}
    for key, value in samples.items():
        base = key.split("{", 1)[0]
        if base != name:
            continue
        have = _labels_of(key)
        if all(have.get(k) == v for k, v in labels.items()):
            found[key] = value
    return found


def total(samples: Mapping[str, float], name: str, **labels: str) -> float | None:
    values = series(samples, name, **labels)
    return sum(values.values()) if values else None


def histogram_quantile(samples: Mapping[str, float], name: str, q: float, **labels: str) -> float | None:
    """The ``q`` quantile (0..1) of histogram ``name`` (its ``_bucket`` series, summed over the other labels), by
    linear interpolation inside the bucket, as Prometheus' ``histogram_quantile`` does. None without observations."""
    buckets: dict[float, float] = {}
    for key, value in series(samples, f"{name}_bucket", **labels).items():
        bound = _labels_of(key).get("le", "+Inf")
        upper = math.inf if bound in ("+Inf", "inf") else float(bound)
        buckets[upper] = buckets.get(upper, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return previous_bound  # beyond the last finite bucket: its upper bound is all we know
            if cumulative == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (cumulative - previous_count)
        previous_bound, previous_count = bound, cumulative
    return None


class MetricsSampler:
    """Reads ``url`` every ``interval_s`` until cancelled; a reading that fails is skipped (and counted)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, path: Path, *, elapsed: Callable[[], float],
                 interval_s: float = 5.0, timeout_s: float = 2.0) -> None:
        self.http = http
        self.url = url
        self.path = path
        self.elapsed = elapsed
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.readings = 0
        self.failed = 0
        self.first: Samples | None = None
        self.last: Samples | None = None
        self.history: list[tuple[float, Samples]] = []  # kept small: selected series only (see keep)

    async def read_once(self) -> Samples | None:
        try:
            async with self.http.get(self.url, timeout=self.timeout) as response:
                if response.status != 200:
                    self.failed += 1
                    return None
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            self.failed += 1
            return None
        samples = parse_samples(text)
        at = round(self.elapsed(), 3)
        self.readings += 1
        if self.first is None:
            self.first = samples
        self.last = samples
        self.history.append((at, {k: v for k, v in samples.items() if not k.split("{", 1)[0].endswith("_bucket")}))
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"t": at, "samples": samples}, separators=(",", ":")) + "\n")
        return samples

    async def run(self) -> None:
        while True:
            await self.read_once()
            await asyncio.sleep(self.interval_s)

    def summary(self) -> dict[str, Any]:
        return {"url": self.url, "readings": self.readings, "failed_readings": self.failed,
                "file": self.path.name}


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def runtime_figures(sampler: MetricsSampler) -> dict[str, float | None]:
    """What the operator's side says about a run, from the first and last readings and the readings over time:
    the figures the incident library judges beside the callers' (names are the runtime's metric names)."""
    last = sampler.last or {}
    first = sampler.first or {}

    def delta(name: str, **labels: str) -> float | None:
        end = total(last, name, **labels)
        if end is None:
            return None
        return end - (total(first, name, **labels) or 0.0)

    emit = histogram_quantile(last, "runtime_workflow_emit_seconds", 0.95)
    # RSS against calls ended: growth per call is the slope (a leak grows with calls, not with time)
    rss_points = [(calls, rss) for _, samples in sampler.history
                  if (calls := total(samples, "runtime_calls_total")) is not None
                  and (rss := total(samples, "runtime_process_resident_memory_bytes")) is not None]
    per_call = _slope(rss_points)
    rss_values = [rss for _, rss in rss_points]
    return {
        "workflow_emit_p95_ms": None if emit is None else round(emit * 1000, 3),
        "breaker_trips": delta("runtime_breaker_trips_total"),
        "provider_fallbacks": delta("runtime_provider_fallbacks_total"),
        "provider_errors": delta("runtime_provider_errors_total"),
        "recording_upload_errors": delta("runtime_recording_upload_errors_total"),
        "workflow_failures": delta("runtime_workflow_events_total", outcome="failed"),
        "rss_mb_first": round(rss_values[0] / 2**20, 1) if rss_values else None,
        "rss_mb_max": round(max(rss_values) / 2**20, 1) if rss_values else None,
        "rss_growth_kb_per_call": None if per_call is None else round(per_call / 1024, 1),
    }
