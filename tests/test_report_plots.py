"""The report's plots and the runtime series under them, on hand-built runs with known answers."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from reports import plots
from reports.model import CALL_COLUMNS, GAP_COLUMNS, TURN_COLUMNS, FaultWindow, RunData, RuntimeSeries
from reports.series import (
    MB,
    bin_start,
    counter_increase,
    labelled_series,
    memory_growth,
    provider_latency_p95,
    run_end_s,
    runtime_series,
    time_bins,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def runtime_of(rows: dict[float, dict[str, float]], last: dict[str, float] | None = None) -> RuntimeSeries:
    """A RuntimeSeries from readings ``{t: {key: value}}``, as the report's reader builds it."""
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "t"
    readings = list(rows.values())
    return RuntimeSeries(frame=frame, first=readings[0] if readings else {},
                         last=last if last is not None else (readings[-1] if readings else {}))


def histogram(name: str, provider: str, buckets: dict[str, float]) -> dict[str, float]:
    return {f'{name}_bucket{{le="{le}",provider="{provider}"}}': count for le, count in buckets.items()}


# --- series --------------------------------------------------------------------------------------------------------

def test_runtime_series_sums_the_matching_label_sets_by_time() -> None:
    runtime = runtime_of({
        0.0: {'runtime_calls_total{outcome="completed"}': 1, 'runtime_calls_total{outcome="dropped"}': 2,
              "runtime_calls_totalx": 100},
        5.0: {'runtime_calls_total{outcome="completed"}': 4, 'runtime_calls_total{outcome="dropped"}': 3,
              "runtime_calls_totalx": 100},
    })
    assert runtime_series(runtime, "runtime_calls_total").to_dict() == {0.0: 3, 5.0: 7}
    assert runtime_series(runtime, "runtime_calls_total", outcome="dropped").to_dict() == {0.0: 2, 5.0: 3}
    assert runtime_series(runtime, "runtime_calls_total", outcome="nope") is None
    assert runtime_series(runtime, "runtime_absent") is None


def test_a_series_that_appears_late_is_summed_where_it_exists() -> None:
    runtime = runtime_of({0.0: {'m{a="x"}': 1.0}, 5.0: {'m{a="x"}': 2.0, 'm{a="y"}': 10.0}})
    assert runtime_series(runtime, "m").to_dict() == {0.0: 1.0, 5.0: 12.0}


def test_labelled_series_gives_one_series_per_breaker() -> None:
    runtime = runtime_of({
        0.0: {'runtime_breaker_state{provider="deepgram",role="stt"}': 0,
              'runtime_breaker_state{provider="openai",role="llm"}': 0},
        5.0: {'runtime_breaker_state{provider="deepgram",role="stt"}': 2,
              'runtime_breaker_state{provider="openai",role="llm"}': 1},
    })
    states = labelled_series(runtime, "runtime_breaker_state")
    assert list(states) == ["provider=deepgram, role=stt", "provider=openai, role=llm"]
    assert states["provider=deepgram, role=stt"].to_dict() == {0.0: 0, 5.0: 2}


def test_counter_increase_counts_through_a_reset() -> None:
    assert counter_increase(pd.Series([0.0, 2.0, 5.0, 1.0, 3.0])) == 2 + 3 + 1 + 2
    assert counter_increase(pd.Series([4.0])) == 0.0


def rss_run(points: list[tuple[float, float, float]], **extra: float) -> RuntimeSeries:
    """Readings of (t, calls ended, RSS in MB)."""
    return runtime_of({t: {"runtime_process_resident_memory_bytes": mb * MB, 'runtime_calls_total{outcome="ok"}': calls,
                           **extra} for t, calls, mb in points})


def test_memory_growth_per_1000_calls_and_per_hour() -> None:
    # 2 MB more every 10 calls, 10 calls every 60 s: 200 MB per 1000 calls, 120 MB per hour.
    growth = memory_growth(rss_run([(60.0 * i, 10.0 * i, 100 + 2.0 * i) for i in range(6)],
                                   runtime_memory_budget_bytes=512 * MB))
    assert growth.mb_per_1000_calls == pytest.approx(200.0)
    assert growth.mb_per_hour == pytest.approx(120.0)
    assert growth.budget_mb == pytest.approx(512.0)
    assert growth.segments == 1 and growth.restarts_s == ()
    assert growth.intercept_mb == pytest.approx(100.0)
    assert growth.rss_mb_max == pytest.approx(110.0)


def test_memory_growth_fits_only_the_longest_stretch_between_restarts() -> None:
    # 3 readings of a steep leak, a restart (counters and RSS back to the start), then 5 readings of a gentle one.
    before = [(10.0 * i, 10.0 * i, 100 + 5.0 * i) for i in range(3)]
    after = [(30.0 + 10.0 * i, 10.0 * i, 100 + 1.0 * i) for i in range(5)]
    growth = memory_growth(rss_run(before + after))
    assert growth.segments == 2
    assert growth.restarts_s == (30.0,)
    assert (growth.fit_from_s, growth.fit_to_s, growth.readings) == (30.0, 70.0, 5)
    assert growth.mb_per_1000_calls == pytest.approx(100.0)  # 1 MB per 10 calls
    assert growth.mb_per_hour == pytest.approx(360.0)  # 1 MB per 10 s
    assert "longest of 2 stretches" in growth.describe()


def test_a_restart_before_any_call_is_seen_by_the_process_start_time() -> None:
    rows = {t: {"runtime_process_resident_memory_bytes": (50 + t) * MB, "runtime_calls_total": 0.0,
                "process_start_time_seconds": 1000.0 if t < 20 else 2000.0} for t in (0.0, 10.0, 20.0, 30.0, 40.0)}
    growth = memory_growth(runtime_of(rows))
    assert growth.segments == 2 and growth.restarts_s == (20.0,)
    assert growth.mb_per_1000_calls is None  # no calls: no spread


def test_memory_growth_needs_three_readings_and_a_budget_above_zero() -> None:
    growth = memory_growth(rss_run([(0.0, 0.0, 100.0), (5.0, 10.0, 102.0)], runtime_memory_budget_bytes=0.0))
    assert growth.mb_per_hour is None and growth.mb_per_1000_calls is None
    assert growth.budget_mb is None
    assert memory_growth(runtime_of({0.0: {"runtime_calls_total": 1.0}})).segments == 0


@pytest.mark.parametrize(("duration", "width"), [(0.0, 1.0), (40.0, 1.0), (41.0, 2.0), (180.0, 5.0),
                                                 (3600.0, 120.0), (86_400.0, 3600.0), (10 * 86_400.0, 3600.0)])
def test_time_bins_picks_a_readable_width(duration: float, width: float) -> None:
    assert time_bins(duration) == width


def test_bin_start_floors_each_time_to_its_bin() -> None:
    assert bin_start(pd.Series([0.0, 4.99, 5.0, 12.5]), 5.0).tolist() == [0.0, 0.0, 5.0, 10.0]


def test_the_time_axis_ends_at_the_last_thing_seen() -> None:
    run = empty_run()
    assert run_end_s(run) == 1.0  # nothing at all: still an axis
    run.duration_s = 100.0
    assert run_end_s(run) == 100.0
    run.faults = [FaultWindow("late", "stt", 90.0, 130.0)]
    run.runtime = runtime_of({0.0: {}, 140.0: {}})
    assert run_end_s(run) == 140.0


def test_provider_latency_p95_per_role_and_provider_from_the_last_reading() -> None:
    last = {**histogram("runtime_stt_first_result_seconds", "deepgram", {"0.1": 0, "0.2": 100, "+Inf": 100}),
            **histogram("runtime_tts_first_byte_seconds", "elevenlabs", {"0.1": 100, "+Inf": 100}),
            **histogram("runtime_llm_first_token_seconds", "openai", {"0.5": 0, "+Inf": 0})}
    p95 = provider_latency_p95(runtime_of({0.0: {}}, last=last))
    assert p95 == {("stt", "deepgram"): pytest.approx(195.0), ("tts", "elevenlabs"): pytest.approx(95.0)}


# --- plots ---------------------------------------------------------------------------------------------------------

FAULT = FaultWindow(label="storage stalled", target="storage", start_s=40.0, end_s=70.0)
OPEN_FAULT = FaultWindow(label="stt 429", target="stt", start_s=90.0, end_s=None)


def full_run() -> RunData:
    rng = np.random.default_rng(1)
    n = 60
    start = np.linspace(0, 110, n)
    in_fault = (start >= FAULT.start_s) & (start < FAULT.end_s)
    calls = pd.DataFrame({c: [None] * n for c in CALL_COLUMNS})
    calls["call_id"] = np.arange(n)
    calls["start_s"] = start
    calls["end_s"] = start + 8
    calls["answered"] = ~in_fault
    calls["outcome"] = np.where(in_fault, "rejected", "completed")
    turns = pd.DataFrame({c: [None] * (n * 3) for c in TURN_COLUMNS})
    turns["call_id"] = np.repeat(np.arange(n), 3)
    turns["kind"] = np.tile(["greeting", "reply", "reply"], n)
    turns["at_s"] = np.repeat(start, 3) + np.tile([0.0, 2.0, 5.0], n)
    turns["response_latency_ms"] = rng.gamma(4, 120, n * 3)
    gaps = pd.DataFrame({"call_id": turns["call_id"], "turn_index": 0, "at_s": turns["at_s"],
                         "gap_ms": rng.lognormal(5, 1.2, n * 3)})[list(GAP_COLUMNS)]
    rows: dict[float, dict[str, float]] = {}
    for i, t in enumerate(np.arange(0.0, 120.0, 5.0)):
        rows[t] = {"runtime_process_resident_memory_bytes": (200 + i) * MB, 'runtime_calls_total{outcome="ok"}': i * 2,
                   "runtime_memory_budget_bytes": 300 * MB,
                   'runtime_breaker_state{provider="deepgram",role="stt"}': 2 if 90 <= t < 105 else 0,
                   'runtime_breaker_state{provider="assemblyai",role="stt"}': 0,
                   'runtime_breaker_trips_total{provider="deepgram",role="stt"}': 1 if t >= 90 else 0,
                   "runtime_recordings_spooled_total": i, "runtime_recordings_uploaded_total": max(0, i - 6),
                   "runtime_recording_spool_entries": min(i, 6)}
    last = {**rows[115.0],
            **histogram("runtime_stt_first_result_seconds", "deepgram", {"0.1": 10, "0.25": 100, "+Inf": 100}),
            **histogram("runtime_tts_first_byte_seconds", "elevenlabs", {"0.1": 100, "+Inf": 100}),
            **histogram("runtime_llm_first_token_seconds", "openai", {"0.5": 50, "1.0": 100, "+Inf": 100})}
    return RunData(run_dir=Path("/nonexistent"), calls=calls, turns=turns, gaps=gaps,
                   config={"targets": {"worker_availability": 0.99}}, runtime=runtime_of(rows, last=last),
                   faults=[FAULT, OPEN_FAULT], duration_s=120.0,
                   recordings={"arrived": 58, "calls_with_media": 60, "missing": 2, "listing_error": None})


def empty_run() -> RunData:
    return RunData(run_dir=Path("/nonexistent"), calls=pd.DataFrame(columns=list(CALL_COLUMNS)),
                   turns=pd.DataFrame(columns=list(TURN_COLUMNS)), gaps=pd.DataFrame(columns=list(GAP_COLUMNS)))


def assert_real_png(png: bytes) -> None:
    assert png.startswith(PNG_SIGNATURE)
    image = imread(BytesIO(png))
    assert image.shape[0] > 150 and image.shape[1] > 800  # ~9.6 in x 2.2-3.2 in at 100 dpi
    assert np.ptp(image[..., :3]) > 0.5  # drawn, not a blank canvas


def test_every_plot_renders_a_png_with_a_caption() -> None:
    rendered = plots.render_plots(full_run())
    assert [p.title for p in rendered] == [title for title, _ in plots.PLOTS]
    assert len(rendered) == 9
    for plot in rendered:
        assert plot.caption and "could not be drawn" not in plot.caption, plot
        assert_real_png(plot.png)


def fault_bands(ax: object) -> list[tuple[float, float]]:
    """The x extent of every shaded fault band on ``ax`` (light red, see-through)."""
    bands = []
    for patch in ax.patches:  # type: ignore[attr-defined]
        red, green, _, alpha = patch.get_facecolor()
        if (patch.get_gid() or "").startswith("fault:") and red > 0.8 > green and alpha < 0.5:
            xs = patch.get_bbox().x0, patch.get_bbox().x1
            bands.append((round(min(xs), 3), round(max(xs), 3)))
    return sorted(bands)


@pytest.mark.parametrize("build", [plots.availability_figure, plots.latency_figure, plots.gap_timeline_figure,
                                   plots.memory_figure, plots.breaker_figure, plots.outcomes_figure,
                                   plots.recordings_figure])
def test_each_timeline_shades_and_labels_the_fault_windows(build) -> None:
    figure, _ = build(full_run())
    ax = figure.axes[0]
    assert ax.get_xlim() == (0.0, 120.0)
    # The open fault (never removed) runs to the end of the axis.
    assert fault_bands(ax) == [(40.0, 70.0), (90.0, 120.0)]
    assert {"storage stalled", "stt 429"} <= {text.get_text().strip() for text in ax.texts}


def test_availability_bins_show_the_outage_below_target() -> None:
    figure, caption = plots.availability_figure(full_run())
    bars = [p for p in figure.axes[0].patches if isinstance(p, Rectangle) and p.get_height() < 101]
    heights = {round(bar.get_x()): bar.get_height() for bar in bars if bar.get_width() < 10}
    assert heights[0] == 100.0 and heights[45] == 0.0  # 5 s bins: the stall's bins answered nothing
    assert "44 of 60 calls answered" in caption and "target 99.0%" in caption


def test_latency_is_binned_per_quantile_and_an_empty_bin_breaks_the_line() -> None:
    run = empty_run()
    run.duration_s = 100.0
    at = np.r_[np.linspace(0, 4.9, 100), np.linspace(50, 54.9, 100)]
    latency = np.r_[np.arange(1.0, 101.0), np.full(100, 1000.0)]
    run.turns = pd.DataFrame({"kind": ["reply"] * 200 + ["greeting", "reply"], "at_s": np.r_[at, 1.0, 2.0],
                              "response_latency_ms": np.r_[latency, 5.0, np.nan]})
    figure, caption = plots.latency_figure(run)
    p50, p95 = (line for line in figure.axes[0].lines if line.get_label() in ("P50", "P95"))
    assert p50.get_xdata()[0] == 2.5  # 5 s bins (200 replies: 20 bins at most), drawn at their middle
    assert p50.get_ydata()[0] == pytest.approx(50.5) and p95.get_ydata()[0] == pytest.approx(95.05)
    assert p95.get_ydata()[10] == 1000.0
    assert np.isnan(p50.get_ydata()[5])  # no reply between 25 and 30 s: no point, the line breaks
    assert "200 agent replies" in caption and "1 caller turn(s) got no reply" in caption


def test_memory_plot_says_the_growth_and_draws_the_budget_lines() -> None:
    figure, caption = plots.memory_figure(full_run())
    # +1 MB every 5 s and 2 calls: 720 MB/h, 500 MB per 1000 calls.
    assert "+720.0 MB/h" in caption and "+500.0 MB per 1000 calls" in caption
    assert "of a 300 MB budget" in caption
    levels = sorted(line.get_ydata()[0] for line in figure.axes[0].lines if line.get_linestyle() == "--"
                    and len(set(line.get_ydata())) == 1)
    assert levels == pytest.approx([240.0, 255.0])


def test_memory_plot_marks_restarts_and_fits_the_longest_stretch() -> None:
    run = full_run()
    before = [(10.0 * i, 10.0 * i, 100 + 5.0 * i) for i in range(3)]
    after = [(30.0 + 10.0 * i, 10.0 * i, 100 + 1.0 * i) for i in range(5)]
    run.runtime = rss_run(before + after)
    figure, caption = plots.memory_figure(run)
    lines = {line.get_label(): line for line in figure.axes[0].lines}
    assert lines["runtime restarted"].get_xdata()[0] == 30.0
    fit = next(line for label, line in lines.items() if label.startswith("fit:"))
    assert list(fit.get_xdata()) == [30.0, 70.0]
    assert list(fit.get_ydata()) == pytest.approx([100.0, 104.0])  # back to 100 MB at the restart, +1 MB per 10 s
    assert "longest of 2 stretches" in caption and "budget" not in caption


def test_breaker_caption_counts_trips() -> None:
    _, caption = plots.breaker_figure(full_run())
    assert "STT deepgram 1" in caption and "STT assemblyai" not in caption


def test_recordings_caption_has_the_harness_count() -> None:
    _, caption = plots.recordings_figure(full_run())
    assert "58 of 60" in caption and "2 missing" in caption


def test_missing_inputs_give_captions_not_images() -> None:
    rendered = plots.render_plots(empty_run())
    assert len(rendered) == 9
    for plot in rendered:
        assert plot.png == b"" and plot.caption and "could not be drawn" not in plot.caption
    by_title = {p.title: p.caption for p in rendered}
    assert "No calls were recorded" in by_title["Worker availability over time"]
    assert "No runtime metrics" in by_title["Memory (RSS) over time"]


def test_a_runtime_without_breakers_or_rss_says_so() -> None:
    run = full_run()
    run.runtime = runtime_of({0.0: {'runtime_calls_total{outcome="ok"}': 0.0}, 5.0: {}})
    by_title = {p.title: p for p in plots.render_plots(run)}
    assert "no circuit-breaker states" in by_title["Circuit-breaker states over time"].caption
    assert "no RSS" in by_title["Memory (RSS) over time"].caption
    assert "no observations" in by_title["Provider latency P95"].caption
    assert by_title["Worker availability over time"].png.startswith(PNG_SIGNATURE)


def test_a_plot_that_fails_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: RunData) -> plots.Drawn:
        raise ValueError("bad column")
    monkeypatch.setattr(plots, "PLOTS", (("Broken", broken), ("Outcomes", plots.outcomes_figure)))
    broken_plot, outcomes = plots.render_plots(full_run())
    assert broken_plot.png == b"" and "ValueError: bad column" in broken_plot.caption
    assert_real_png(outcomes.png)


def test_a_large_gap_timeline_draws_at_most_the_cap_and_every_long_gap() -> None:
    n = 200_000
    rng = np.random.default_rng(2)
    run = empty_run()
    gap_ms = rng.uniform(10, 1000, n)
    gap_ms[:50] = 5000.0  # the long gaps must all be drawn
    run.gaps = pd.DataFrame({"call_id": np.arange(n) // 10, "turn_index": 0, "at_s": rng.uniform(0, 3600, n),
                             "gap_ms": gap_ms})
    figure, caption = plots.gap_timeline_figure(run)
    (points,) = figure.axes[0].collections
    drawn = points.get_offsets()
    assert len(drawn) == plots.MAX_POINTS
    assert (np.asarray(drawn)[:, 1] == 5000.0).sum() == 50
    assert f"{plots.MAX_POINTS} of {n} drawn" in caption


def test_a_flood_of_long_gaps_still_leaves_room_for_the_normal_ones() -> None:
    frame = pd.DataFrame({"gap_ms": np.r_[np.full(30_000, 5000.0), np.full(30_000, 100.0)]})
    shown = plots._subsample(frame, frame["gap_ms"] > 1500, limit=1000)
    assert len(shown) == 1000
    assert (shown["gap_ms"] > 1500).sum() == 750
    assert len(plots._subsample(frame.head(900), frame.head(900)["gap_ms"] > 1500, limit=1000)) == 900
