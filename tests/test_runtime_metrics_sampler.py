"""Reading the runtime's Prometheus metrics: samples keyed by name and labels, and histogram quantiles with known
answers (the same interpolation as Prometheus' histogram_quantile)."""

from __future__ import annotations

import pytest

from harness.runtime_metrics import histogram_quantile, parse_samples, series, total

TEXT = """# HELP runtime_workflow_emit_seconds Time to emit a workflow event
# TYPE runtime_workflow_emit_seconds histogram
runtime_workflow_emit_seconds_bucket{le="0.001"} 90.0
runtime_workflow_emit_seconds_bucket{le="0.01"} 100.0
runtime_workflow_emit_seconds_bucket{le="+Inf"} 100.0
runtime_workflow_emit_seconds_count 100.0
runtime_workflow_emit_seconds_sum 0.05
# HELP runtime_breaker_trips_total Breaker trips
# TYPE runtime_breaker_trips_total counter
runtime_breaker_trips_total{provider="deepgram",role="stt"} 2.0
runtime_breaker_trips_total{provider="openai",role="llm"} 1.0
# HELP runtime_rss_bytes RSS
# TYPE runtime_rss_bytes gauge
runtime_rss_bytes 1.048576e+08
# HELP other_metric not ours
# TYPE other_metric gauge
other_metric 5
"""


def test_samples_are_keyed_by_name_and_sorted_labels() -> None:
    samples = parse_samples(TEXT)
    assert samples['runtime_breaker_trips_total{provider="deepgram",role="stt"}'] == 2.0
    assert samples["runtime_rss_bytes"] == 104857600.0
    assert "other_metric" not in samples
    assert total(samples, "runtime_breaker_trips_total") == 3.0
    assert total(samples, "runtime_breaker_trips_total", role="llm") == 1.0
    assert total(samples, "runtime_missing_total") is None
    assert len(series(samples, "runtime_workflow_emit_seconds_bucket")) == 3


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    samples = parse_samples(TEXT)
    # 90 of 100 below 1 ms: p50 is at 50/90 of the first bucket; p95 halfway through the second (1..10 ms)
    assert histogram_quantile(samples, "runtime_workflow_emit_seconds", 0.5) == pytest.approx(0.001 * 50 / 90)
    assert histogram_quantile(samples, "runtime_workflow_emit_seconds", 0.95) == pytest.approx(0.0055)
    assert histogram_quantile(samples, "runtime_missing_seconds", 0.95) is None
