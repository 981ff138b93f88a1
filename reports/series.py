"""Time series pulled out of the runtime's ``/metrics`` readings (``RuntimeSeries``), for the plots and the metrics.

Pure functions of the frame: no I/O, no state. Keys are ``name{label="v",...}`` with the labels sorted, as
``harness.runtime_metrics.parse_samples`` writes them. Memory is in MB of 2**20 bytes, as the harness reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.runtime_metrics import _labels_of, histogram_quantile
from reports.model import RunData, RuntimeSeries

MB = float(2**20)
RSS = "runtime_process_resident_memory_bytes"
CALLS = "runtime_calls_total"
BUDGET = "runtime_memory_budget_bytes"
# A change of the process's start time is a restart even when no counter had moved yet (prometheus_client's
# process collector exports it on Linux).
START_TIME = "process_start_time_seconds"
# role -> the runtime's latency histogram for it (labelled by provider): what mission.md's provider health judges.
PROVIDER_LATENCY = {"stt": "runtime_stt_first_result_seconds", "tts": "runtime_tts_first_byte_seconds",
                    "llm": "runtime_llm_first_token_seconds"}
NICE_BIN_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def _matching_columns(frame: pd.DataFrame, name: str, labels: dict[str, str]) -> list[str]:
    out = []
    for key in frame.columns:
        if str(key).split("{", 1)[0] != name:
            continue
        have = _labels_of(str(key))
        if all(have.get(k) == v for k, v in labels.items()):
            out.append(str(key))
    return out


def runtime_series(runtime: RuntimeSeries, name: str, **labels: str) -> pd.Series | None:
    """The sum of metric ``name`` over the series whose labels include ``labels``, indexed by t (readings where
    none of them had a value are left out). None when the metric never appears."""
    columns = _matching_columns(runtime.frame, name, labels)
    if not columns:
        return None
    summed = runtime.frame[columns].sum(axis=1, min_count=1).dropna()
    return summed.rename(name) if len(summed) else None


def labelled_series(runtime: RuntimeSeries, name: str) -> dict[str, pd.Series]:
    """One series per label set of metric ``name``, keyed by its labels as a person reads them
    (``provider=deepgram, role=stt``; the bare name for a series without labels), sorted by key."""
    out: dict[str, pd.Series] = {}
    for key in _matching_columns(runtime.frame, name, {}):
        values = runtime.frame[key].dropna()
        if len(values):
            label = ", ".join(f"{k}={v}" for k, v in sorted(_labels_of(key).items())) or name
            out[label] = values.rename(label)
    return dict(sorted(out.items()))


def counter_increase(values: pd.Series) -> float:
    """How much a counter grew over the readings, as Prometheus' ``increase`` counts it: a drop is a reset (the
    runtime restarted), after which the counter's whole new value is growth."""
    array = values.dropna().to_numpy(dtype=float)
    if len(array) < 2:
        return 0.0
    steps = np.diff(array)
    return float(np.where(steps >= 0, steps, array[1:]).sum())


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of y over x; None with fewer than 3 points or no spread in x."""
    if len(x) < 3:
        return None
    spread = x - x.mean()
    var = float((spread**2).sum())
    if var == 0:
        return None
    return float((spread * (y - y.mean())).sum() / var)


@dataclass(frozen=True)
class MemoryGrowth:
    """How the runtime's RSS grew, fitted on the longest stretch of readings without a restart (a restart resets
    RSS and the counters, so a fit across it would see a fall, or a leak twice as steep as it is)."""

    mb_per_hour: float | None  # slope of RSS against the run's time
    mb_per_1000_calls: float | None  # slope of RSS against calls ended: a leak grows with calls, not with time
    budget_mb: float | None  # runtime_memory_budget_bytes (None if absent or 0)
    segments: int  # stretches between restarts: 1 when the runtime never restarted, 0 without RSS readings
    fit_from_s: float | None = None  # the stretch fitted
    fit_to_s: float | None = None
    readings: int = 0  # RSS readings in the stretch fitted
    intercept_mb: float | None = None  # the fitted line over time: RSS MB = intercept_mb + mb_per_hour * t / 3600
    rss_mb_max: float | None = None  # over the whole run
    restarts_s: tuple[float, ...] = ()  # first reading after each restart

    def describe(self) -> str:
        """One line for a caption or a note."""
        if self.segments == 0:
            return "no RSS readings"

        def fmt(value: float | None, unit: str) -> str:
            return "not enough readings" if value is None else f"{value:+.1f} {unit}"
        text = f"growth {fmt(self.mb_per_hour, 'MB/h')}, {fmt(self.mb_per_1000_calls, 'MB per 1000 calls')}"
        if self.segments > 1:
            text += (f" (fitted on the longest of {self.segments} stretches between runtime restarts, "
                     f"{self.fit_from_s:.0f}-{self.fit_to_s:.0f} s)")
        return text


def _restart_mask(frame: pd.DataFrame, calls: pd.Series | None, start: pd.Series | None) -> pd.Series:
    """True at each reading that follows a restart: the calls counter fell or the process's start time changed."""
    restarted = pd.Series(False, index=frame.index)
    if calls is not None:
        restarted |= (calls.diff() < 0).reindex(frame.index, fill_value=False)
    if start is not None:
        changed = start.diff().fillna(0) != 0
        restarted |= changed.reindex(frame.index, fill_value=False)
    return restarted


def memory_growth(runtime: RuntimeSeries) -> MemoryGrowth:
    frame = runtime.frame.sort_index()
    budget = runtime_series(runtime, BUDGET)
    budget_mb = float(budget.iloc[-1]) / MB if budget is not None and budget.iloc[-1] > 0 else None
    rss = runtime_series(runtime, RSS)
    if rss is None:
        return MemoryGrowth(None, None, budget_mb, segments=0)
    calls = runtime_series(runtime, CALLS)
    restarted = _restart_mask(frame, calls, runtime_series(runtime, START_TIME))
    segment_of = restarted.cumsum()
    # The longest stretch by RSS readings (the first of equals): that is what the fit sees.
    per_segment = segment_of.loc[rss.index].value_counts(sort=False).sort_index()
    chosen = int(per_segment.idxmax())
    rss = rss.sort_index()
    stretch = rss[segment_of.loc[rss.index].to_numpy() == chosen]
    t = stretch.index.to_numpy(dtype=float)
    mb = stretch.to_numpy(dtype=float) / MB
    per_second = _slope(t, mb)
    per_call = None
    if calls is not None:
        both = pd.concat([stretch / MB, calls], axis=1, join="inner").dropna()
        per_call = _slope(both.iloc[:, 1].to_numpy(dtype=float), both.iloc[:, 0].to_numpy(dtype=float))
    return MemoryGrowth(
        mb_per_hour=None if per_second is None else per_second * 3600,
        mb_per_1000_calls=None if per_call is None else per_call * 1000,
        budget_mb=budget_mb,
        segments=int(segment_of.iloc[-1]) + 1,
        fit_from_s=float(t[0]), fit_to_s=float(t[-1]), readings=len(t),
        intercept_mb=None if per_second is None else float(mb.mean() - per_second * t.mean()),
        rss_mb_max=float(rss.max()) / MB,
        restarts_s=tuple(float(x) for x in restarted.index[restarted.to_numpy()]),
    )


def run_end_s(data: RunData) -> float:
    """The end of the run's time axis: the load's end, or the last thing seen if that came later (calls still
    ending, a last metrics reading, a fault removed after the load)."""
    seen = [data.duration_s or 0.0]
    for frame, column in ((data.calls, "end_s"), (data.calls, "start_s"), (data.turns, "at_s")):
        if column in frame.columns and len(frame) and pd.notna(latest := frame[column].max()):
            seen.append(float(latest))
    if data.runtime is not None and len(data.runtime.frame):
        seen.append(float(data.runtime.frame.index.max()))
    seen += [f.end_s if f.end_s is not None else f.start_s for f in data.faults]
    return max(seen) or 1.0


def bin_start(times: pd.Series, width: float) -> pd.Series:
    """The start of each time's bin of ``width`` seconds (vectorised: a million rows at once)."""
    return np.floor(times / width) * width


def time_bins(duration_s: float, target_bins: int = 40) -> float:
    """The smallest readable bin width giving at most ``target_bins`` bins over ``duration_s`` (the widest, one
    hour, for anything longer)."""
    for width in NICE_BIN_WIDTHS_S:
        if duration_s / width <= target_bins:
            return float(width)
    return float(NICE_BIN_WIDTHS_S[-1])


def provider_latency_p95(runtime: RuntimeSeries) -> dict[tuple[str, str], float]:
    """P95 in ms per (role, provider) over the whole run, from the last reading's cumulative histograms."""
    out: dict[tuple[str, str], float] = {}
    for role, name in PROVIDER_LATENCY.items():
        providers = sorted({_labels_of(key).get("provider", "") for key in runtime.last
                            if key.split("{", 1)[0] == f"{name}_bucket"})
        for provider in providers:
            seconds = histogram_quantile(runtime.last, name, 0.95, provider=provider)
            if seconds is not None:
                out[(role, provider)] = seconds * 1000
    return out
