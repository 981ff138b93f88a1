"""Probes (Chaos Toolkit's word for a read-only look at the system): the counters a fault window is measured by.

The runtime's Prometheus ``/metrics`` (upload errors, provider errors by status, workflow failures...) and each
fake's ``/_chaos/stats`` are read when a fault is applied and when it is rolled back; the difference is what the
fault did as the system itself counted it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+([-+0-9.eEinfINFNa]+)(?:\s+\d+)?$")


def prometheus_counters(text: str) -> dict[str, float]:
    """Counter samples (``*_total``) of a Prometheus text exposition, keyed by ``name{labels}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        key = match.group(1)
        name = key.split("{", 1)[0]
        if not name.endswith("_total"):
            continue
        try:
            out[key] = float(match.group(2))
        except ValueError:
            continue
    return out


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)


class CounterProbe:
    """Reads the runtime's counters and the fakes' stats; a source that does not answer is left out (a probe never
    fails a run)."""

    def __init__(self, http: aiohttp.ClientSession, *, metrics_url: str | None, stats_urls: dict[str, str],
                 timeout_s: float = 2.0) -> None:
        self.http = http
        self.metrics_url = metrics_url
        self.stats_urls = stats_urls
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __call__(self) -> dict[str, float]:
        results = await asyncio.gather(self._metrics(), *(self._stats(name, url)
                                                          for name, url in self.stats_urls.items()))
        out: dict[str, float] = {}
        for part in results:
            out.update(part)
        return out

    async def _metrics(self) -> dict[str, float]:
        if self.metrics_url is None:
            return {}
        try:
            async with self.http.get(self.metrics_url, timeout=self.timeout) as response:
                if response.status != 200:
                    return {}
                return {f"runtime:{k}": v for k, v in prometheus_counters(await response.text()).items()}
        except (aiohttp.ClientError, TimeoutError):
            return {}

    async def _stats(self, name: str, url: str) -> dict[str, float]:
        try:
            async with self.http.get(url, timeout=self.timeout) as response:
                if response.status != 200:
                    return {}
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        out: dict[str, float] = {}
        _flatten(name, data, out)
        return out
