"""The report's plots: what callers and the operator saw over the run, with the fault windows shaded.

Each ``*_figure(data)`` returns a matplotlib ``Figure`` (object API, no pyplot state) and its caption, or ``None``
and a caption that says what is missing; ``render_plots`` turns them into PNGs. Every timeline shares one x axis
(seconds after the load started). Large runs are binned with pandas (no loop over rows) and scatter plots are
subsampled, so a million turns draw in a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports import series as rs
from reports.model import FaultWindow, Plot, RunData

DPI = 100
SIZE = (9.6, 3.2)  # inches
MAX_POINTS = 20_000  # scatter points drawn at most
FAULT_COLOUR, FAULT_TEXT = "#e53935", "#b71c1c"
OK_COLOUR, BAD_COLOUR = "#43a047", "#c62828"
OUTCOME_COLOURS = {"completed": "#43a047", "rejected": "#fb8c00", "dropped": "#e53935", "failed_to_connect": "#8e24aa",
                   "timed_out": "#6d4c41", "error": "#212121", "unfinished": "#9e9e9e"}
ROLE_COLOURS = {"stt": "#1e88e5", "tts": "#8e24aa", "llm": "#fb8c00"}
NO_RUNTIME = "No runtime metrics were read (runtime_metrics.jsonl is missing or empty)"
NO_GAPS = "No silence gaps were recorded inside agent turns (no agent turns, or no pauses in the agent's speech)."
STATE_NAMES = ("closed", "half-open", "open")  # runtime_breaker_state 0, 1, 2
RECORDING_SERIES = (("spooled (total)", "runtime_recordings_spooled_total", "#1e88e5"),
                    ("uploaded (total)", "runtime_recordings_uploaded_total", "#43a047"),
                    ("waiting in the spool", "runtime_recording_spool_entries", "#fb8c00"))

Drawn = tuple[Figure | None, str]  # the figure (None when its data is absent) and its caption


def render_plots(data: RunData) -> list[Plot]:
    plots = []
    for title, build in PLOTS:
        try:
            figure, caption = build(data)
        except Exception as exc:  # one plot that cannot be drawn must not cost the engineer the whole report
            figure, caption = None, f"This plot could not be drawn: {type(exc).__name__}: {exc}"
        plots.append(Plot(title, to_png(figure) if figure is not None else b"", caption))
    return plots


def to_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no backend chosen globally
    out = BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _target(data: RunData, key: str, default: float) -> float:
    value = ((data.config or {}).get("targets") or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _has(frame: pd.DataFrame, *columns: str) -> bool:
    return len(frame) > 0 and all(c in frame.columns for c in columns)


def shade_faults(ax: Axes, faults: list[FaultWindow], end: float) -> None:
    """Each fault window as a light red band labelled at the top; a fault never removed runs to ``end``. Labels of
    faults that start close together are stepped down so they do not print over each other."""
    level, previous = 0, -np.inf
    for fault in sorted(faults, key=lambda f: f.start_s):
        level = level + 1 if fault.start_s - previous < 0.15 * end else 0
        previous, failed = fault.start_s, fault.error is not None
        ax.axvspan(fault.start_s, end if fault.end_s is None else fault.end_s, color=FAULT_COLOUR,
                   alpha=0.06 if failed else 0.15, lw=0, hatch="//" if failed else None, gid=f"fault:{fault.label}")
        ax.text(fault.start_s, 0.98 - 0.09 * (level % 3), f" {fault.label}{' (failed to apply)' if failed else ''}",
                fontsize=8, color=FAULT_TEXT, va="top", ha="left", transform=ax.get_xaxis_transform(), clip_on=True)


def _figure(height: float = SIZE[1], aligned: bool = False) -> tuple[Figure, Axes]:
    """A figure with one axes. ``aligned``: fixed margins instead of a computed layout, so every timeline's x axis
    sits at the same place on the page and a dip in one plot lines up with a fault or a breaker in the next."""
    figure = Figure(figsize=(SIZE[0], height), dpi=DPI, layout=None if aligned else "constrained")
    if aligned:
        figure.subplots_adjust(left=0.09, right=0.76, bottom=0.16, top=0.95)  # room for "half-open"
    ax = figure.add_subplot()
    ax.grid(alpha=0.3)
    return figure, ax


def _timeline(data: RunData) -> tuple[Figure, Axes, float]:
    figure, ax = _figure(aligned=True)
    end = rs.run_end_s(data)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds after the load started")
    shade_faults(ax, data.faults, end)
    return figure, ax, end


def _legend(figure: Figure, *axes: Axes) -> None:
    """One legend outside the axes, on the right: it never hides data or a fault's label."""
    pairs = [pair for ax in axes for pair in zip(*ax.get_legend_handles_labels(), strict=True)]
    if not pairs:
        return
    beside = 0.77 if len(axes) == 1 else 0.835  # past the twin axis's labels when there is one
    where = {"loc": "outside right upper"} if figure.get_layout_engine() else \
        {"loc": "upper left", "bbox_to_anchor": (beside, 0.95)}
    figure.legend(*zip(*pairs, strict=True), fontsize=8, **where)


def _counts(ax: Axes) -> None:
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)


def _subsample(frame: pd.DataFrame, favoured: pd.Series, limit: int = MAX_POINTS) -> pd.DataFrame:
    """At most ``limit`` rows, ``favoured`` ones first (the outliers are what the reader looks for) but at most 3/4 of
    them while others remain, so the picture still shows what is normal. A fixed seed: the same run, the same plot."""
    if len(frame) <= limit:
        return frame
    rest = frame[~favoured]
    first = frame[favoured].sample(min(int(favoured.sum()), max(limit * 3 // 4, limit - len(rest))), random_state=0)
    return pd.concat([first, rest.sample(limit - len(first), random_state=0)])


def availability_figure(data: RunData) -> Drawn:
    calls = data.calls
    if not _has(calls, "start_s", "answered") or calls["start_s"].notna().sum() == 0:
        return None, "No calls were recorded: worker availability over time cannot be drawn."
    target = _target(data, "worker_availability", 0.999)
    figure, ax, end = _timeline(data)
    width = rs.time_bins(end)
    started = calls["start_s"].notna()
    frame = pd.DataFrame({"bin": rs.bin_start(calls.loc[started, "start_s"], width),
                          "answered": calls.loc[started, "answered"].eq(True)})
    per_bin = frame.groupby("bin")["answered"].agg(["mean", "size"])
    ax.bar(per_bin.index, per_bin["mean"] * 100, width=width * 0.9, align="edge", label="answered (per bin)",
           color=np.where(per_bin["mean"] >= target, OK_COLOUR, BAD_COLOUR))
    ax.axhline(target * 100, color="black", ls="--", lw=1, label=f"target {target:.1%}")
    ax.set_ylim(0, 105)
    ax.set_ylabel("calls answered (%)")
    twin = ax.twinx()
    twin.plot(per_bin.index + width / 2, per_bin["size"], color="grey", marker="o", ms=3, lw=1,
              label="calls started per bin")
    _counts(twin)
    twin.set_ylim(top=per_bin["size"].max() * 1.15)
    twin.set_ylabel(f"calls per {width:g} s")
    _legend(figure, ax, twin)
    answered, total = int(frame["answered"].sum()), len(frame)
    return figure, (f"{answered} of {total} calls answered ({answered / total:.2%}); target {target:.1%}. Bars: share "
                    f"of the calls started in each {width:g} s bin that were answered (red: below target); grey line: "
                    "calls started per bin.")


def latency_figure(data: RunData) -> Drawn:
    turns = data.turns
    if not _has(turns, "kind", "at_s", "response_latency_ms"):
        return None, "No agent turns were recorded: response latency over time cannot be drawn."
    is_reply = turns["kind"].eq("reply")
    replies = turns.loc[is_reply & turns["response_latency_ms"].notna() & turns["at_s"].notna(),
                        ["at_s", "response_latency_ms"]]
    if replies.empty:
        return None, "No agent reply had a measured response latency (the agent never answered a caller's turn)."
    target = _target(data, "response_latency_p95_ms", 800.0)
    figure, ax, end = _timeline(data)
    # ~10 replies a bin at least: a P95 of two replies says nothing. Empty bins stay empty (the line breaks).
    width = rs.time_bins(end, max(1, min(40, len(replies) // 10)))
    grouped = replies.groupby(rs.bin_start(replies["at_s"], width))["response_latency_ms"]
    every_bin = np.arange(np.ceil(end / width)) * width
    for q, colour in ((0.5, "#1e88e5"), (0.95, "#e65100")):
        values = grouped.quantile(q).reindex(every_bin)
        ax.plot(every_bin + width / 2, values, color=colour, marker="o", ms=3, lw=1.5, label=f"P{q * 100:.0f}")
    ax.axhline(target, color="black", ls="--", lw=1, label=f"P95 target {target:g} ms")
    ax.set_ylim(0, max(grouped.quantile(0.95).max(), target) * 1.15)  # room for the fault labels
    ax.set_ylabel("response latency (ms)")
    _legend(figure, ax)
    latency = replies["response_latency_ms"]
    unanswered = int((is_reply & turns["response_latency_ms"].isna()).sum())
    return figure, (f"{len(replies)} agent replies: P50 {latency.quantile(0.5):.0f} ms, P95 "
                    f"{latency.quantile(0.95):.0f} ms over the run (target P95 <= {target:g} ms), per {width:g} s bin "
                    "of the end of the caller's speech."
                    + (f" {unanswered} caller turn(s) got no reply at all (no latency to draw)." if unanswered else ""))


def _gap_lines(data: RunData, ax: Axes, vertical: bool) -> tuple[float, float]:
    dead, broken = _target(data, "dead_air_ms", 1500.0), _target(data, "broken_silence_ms", 3000.0)
    line = ax.axvline if vertical else ax.axhline
    line(dead, color="#fb8c00", ls="--", lw=1, label=f"dead air {dead:g} ms")
    line(broken, color=BAD_COLOUR, ls="--", lw=1, label=f"call feels broken {broken:g} ms")
    return dead, broken


def _gaps(data: RunData) -> pd.DataFrame | None:
    if not _has(data.gaps, "gap_ms", "at_s"):
        return None
    gaps = data.gaps.loc[data.gaps["gap_ms"].notna(), ["at_s", "gap_ms", "call_id"]]
    return gaps if len(gaps) else None


def gap_distribution_figure(data: RunData) -> Drawn:
    gaps = _gaps(data)
    if gaps is None:
        return None, NO_GAPS
    values = gaps["gap_ms"].to_numpy(dtype=float)
    figure, ax = _figure()
    positive = values[values > 0]
    wide = len(positive) > 0 and positive.max() / max(positive.min(), 1.0) > 50
    if wide:  # log bins: the long silences that matter stay visible beside the many short pauses
        ax.hist(positive, bins=np.geomspace(max(positive.min(), 1.0), positive.max(), 50), color="#1e88e5")
        ax.set_xscale("log")
    else:
        ax.hist(values, bins=50, color="#1e88e5")
    ax.set_yscale("log")
    dead, broken = _gap_lines(data, ax, vertical=True)
    ax.set_xlabel("silence gap inside an agent turn (ms)" + (", log scale" if wide else ""))
    ax.set_ylabel("gaps (log scale)")
    _legend(figure, ax)
    over_dead, over_broken = int((values > dead).sum()), int((values > broken).sum())
    return figure, (f"{len(values)} silence gaps in agent turns, longest {values.max():.0f} ms: {over_dead} over "
                    f"{dead:g} ms (dead air, {over_dead / len(values):.2%}), {over_broken} over {broken:g} ms "
                    f"(the call feels broken), in {gaps.loc[gaps['gap_ms'] > dead, 'call_id'].nunique()} calls.")


def gap_timeline_figure(data: RunData) -> Drawn:
    gaps = _gaps(data)
    if gaps is None:
        return None, NO_GAPS
    figure, ax, _ = _timeline(data)
    dead, broken = _gap_lines(data, ax, vertical=False)
    shown = _subsample(gaps, gaps["gap_ms"] > dead)
    colours = np.where(shown["gap_ms"] > broken, BAD_COLOUR, np.where(shown["gap_ms"] > dead, "#fb8c00", "#1e88e5"))
    ax.scatter(shown["at_s"], shown["gap_ms"], s=8, c=colours, alpha=0.6, lw=0)
    wide = gaps["gap_ms"].max() / max(gaps["gap_ms"].min(), 1.0) > 50
    if wide:
        ax.set_yscale("log")
    ax.set_ylim(top=max(gaps["gap_ms"].max(), broken) * (3 if wide else 1.15))  # room for the fault labels
    ax.set_ylabel("silence gap (ms)")
    _legend(figure, ax)
    sampled = f" ({len(shown)} of {len(gaps)} drawn, gaps over {dead:g} ms favoured)" * (len(shown) < len(gaps))
    return figure, (f"Every silence gap inside an agent turn, at its turn's time{sampled}; orange: dead air, red: the "
                    "call feels broken.")


def memory_figure(data: RunData) -> Drawn:
    if data.runtime is None:
        return None, f"{NO_RUNTIME}: memory over time cannot be drawn."
    rss = rs.runtime_series(data.runtime, rs.RSS)
    if rss is None:
        return None, f"The runtime exported no RSS ({rs.RSS}): memory over time cannot be drawn."
    growth = rs.memory_growth(data.runtime)
    figure, ax, _ = _timeline(data)
    ax.plot(rss.index, rss / rs.MB, color="#1e88e5", marker=".", lw=1.5, label="RSS")
    if growth.mb_per_hour is not None and growth.intercept_mb is not None:
        t = np.array([growth.fit_from_s, growth.fit_to_s], dtype=float)
        per_call = "" if growth.mb_per_1000_calls is None else f",\n{growth.mb_per_1000_calls:+.1f} MB/1000 calls"
        ax.plot(t, growth.intercept_mb + growth.mb_per_hour * t / 3600, color="black", ls="--", lw=1,
                label=f"fit: {growth.mb_per_hour:+.1f} MB/h{per_call}")
    if growth.budget_mb:
        ax.axhline(0.8 * growth.budget_mb, color="#fb8c00", ls="--", lw=1, label="80 % of budget (alert)")
        ax.axhline(0.85 * growth.budget_mb, color=BAD_COLOUR, ls="--", lw=1, label="85 % of budget (drain)")
    for i, at in enumerate(growth.restarts_s):
        ax.axvline(at, color="grey", ls=":", lw=1.5, label="runtime restarted" if i == 0 else None)
    ax.set_ylim(0, max(rss.max() / rs.MB, 0.85 * (growth.budget_mb or 0)) * 1.15)  # room for the fault labels
    ax.set_ylabel("RSS (MB)")
    _legend(figure, ax)
    budget = "" if not growth.budget_mb else \
        f" of a {growth.budget_mb:.0f} MB budget ({(growth.rss_mb_max or 0) / growth.budget_mb:.0%})"
    return figure, f"Resident memory of the runtime: peak {growth.rss_mb_max:.0f} MB{budget}; {growth.describe()}."


def _pretty(labels: str) -> str:
    """``provider=deepgram, role=stt`` -> ``STT deepgram``."""
    parts = dict(part.split("=", 1) for part in labels.split(", ") if "=" in part)
    return f"{parts['role'].upper()} {parts['provider']}" if {"role", "provider"} <= parts.keys() else labels


def breaker_figure(data: RunData) -> Drawn:
    if data.runtime is None:
        return None, f"{NO_RUNTIME}: circuit-breaker states cannot be drawn."
    states = rs.labelled_series(data.runtime, "runtime_breaker_state")
    if not states:
        return None, ("The runtime exported no circuit-breaker states (runtime_breaker_state): no breakers "
                      "(provider resilience broken, or a runtime without them).")
    figure, ax, _ = _timeline(data)
    for i, (labels, values) in enumerate(states.items()):
        # A small offset per breaker, so breakers in the same state do not hide each other.
        ax.step(values.index, values + i * 0.04, where="post", lw=1.5, label=_pretty(labels))
    ax.set_yticks(range(3), STATE_NAMES)
    ax.set_ylim(-0.2, 2.3 + 0.04 * len(states))
    _legend(figure, ax)
    trips = rs.labelled_series(data.runtime, "runtime_breaker_trips_total")
    counted = ", ".join(f"{_pretty(k)} {rs.counter_increase(v):.0f}" for k, v in trips.items()) or "not exported"
    return figure, (f"Each provider's breaker, from the runtime's readings (every few seconds: a shorter opening may "
                    f"not show, the trip counts do). Trips during the run: {counted}.")


def provider_latency_figure(data: RunData) -> Drawn:
    if data.runtime is None:
        return None, f"{NO_RUNTIME}: provider latency cannot be drawn."
    p95 = rs.provider_latency_p95(data.runtime)
    if not p95:
        return None, "The runtime's provider latency histograms had no observations (no STT, TTS or LLM request)."
    order = sorted(p95, key=lambda rp: (list(rs.PROVIDER_LATENCY).index(rp[0]), rp[1]))
    values = [p95[rp] for rp in order]
    figure, ax = _figure(max(2.2, 0.45 * len(order) + 1.2))
    y = np.arange(len(order))[::-1]
    ax.barh(y, values, color=[ROLE_COLOURS[role] for role, _ in order], height=0.6)
    ax.set_yticks(y, [f"{role.upper()} {provider}" for role, provider in order])
    for yi, (role, _), value in zip(y, order, values, strict=True):
        ax.text(value, yi, f" {value:.0f} ms", va="center", fontsize=8)
        if role in ("stt", "tts"):  # mission.md: STT and TTS P95 < 150 ms; the LLM is tracked, no target
            ax.vlines(_target(data, f"{role}_latency_p95_ms", 150.0), yi - 0.4, yi + 0.4, color="black", ls="--",
                      lw=1.2, label="P95 target (STT, TTS)")
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_xlabel("P95 latency (ms)")
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # one entry for all the target marks
        figure.legend(handles[:1], labels[:1], loc="outside right upper", fontsize=8)
    return figure, ("P95 per provider over the run, from the runtime's histograms at its last reading (since its last "
                    "start): STT audio sent to its first transcript (the final one also waits for endpointing), TTS "
                    "request to first audio byte, LLM request to first token. Target: STT and TTS P95 < 150 ms; the "
                    "LLM is tracked.")


def outcomes_figure(data: RunData) -> Drawn:
    calls = data.calls
    if not _has(calls, "start_s", "outcome") or calls["start_s"].notna().sum() == 0:
        return None, "No calls were recorded: call outcomes over time cannot be drawn."
    figure, ax, end = _timeline(data)
    width = rs.time_bins(end)
    frame = calls.loc[calls["start_s"].notna(), ["start_s", "outcome"]]
    table = pd.crosstab(rs.bin_start(frame["start_s"], width), frame["outcome"].fillna("unknown"))
    columns = [c for c in OUTCOME_COLOURS if c in table.columns] + sorted(set(table.columns) - set(OUTCOME_COLOURS))
    bottom = np.zeros(len(table))
    for outcome in columns:
        counts = table[outcome].to_numpy()
        ax.bar(table.index, counts, width=width * 0.9, align="edge", bottom=bottom, label=outcome,
               color=OUTCOME_COLOURS.get(outcome))
        bottom += counts
    _counts(ax)
    ax.set_ylabel(f"calls started per {width:g} s")
    _legend(figure, ax)
    totals = ", ".join(f"{c} {int(table[c].sum())}" for c in columns)
    return figure, f"How each call ended, by when it started ({width:g} s bins). {len(frame)} calls: {totals}."


def recordings_figure(data: RunData) -> Drawn:
    seen = data.recordings or (data.summary or {}).get("recordings") or {}
    harness = "" if not seen else (f" The harness found {seen.get('arrived')} of {seen.get('calls_with_media')} calls' "
                                   f"recordings in the object store ({seen.get('missing')} missing).")
    if data.runtime is None:
        return None, f"{NO_RUNTIME}: recordings over time cannot be drawn.{harness}"
    found = [(label, values, colour) for label, name, colour in RECORDING_SERIES
             if (values := rs.runtime_series(data.runtime, name)) is not None]
    lost = rs.runtime_series(data.runtime, "runtime_recordings_total", outcome="lost")
    if lost is not None and lost.max() > 0:
        found.append(("lost (total)", lost, BAD_COLOUR))
    if not found:
        return None, f"The runtime exported no recording metrics (spooled, uploaded, spool entries).{harness}"
    figure, ax, _ = _timeline(data)
    for label, values, colour in found:
        ax.step(values.index, values, where="post", color=colour, lw=1.5, label=label)
    _counts(ax)
    ax.set_ylabel("recordings")
    _legend(figure, ax)
    return figure, ("The runtime's recordings: written to the durable spool, uploaded to the object store, and waiting "
                    f"for upload (counters restart from 0 when the runtime restarts).{harness}")


PLOTS: tuple[tuple[str, Callable[[RunData], Drawn]], ...] = (
    ("Worker availability over time", availability_figure),
    ("Response latency over time", latency_figure),
    ("Silence gaps: distribution", gap_distribution_figure),
    ("Silence gaps over time", gap_timeline_figure),
    ("Memory (RSS) over time", memory_figure),
    ("Circuit-breaker states over time", breaker_figure),
    ("Provider latency P95", provider_latency_figure),
    ("Call outcomes over time", outcomes_figure),
    ("Recordings spooled vs uploaded", recordings_figure),
)
