"""--history: the run index (one line per run, replaced on re-report) and the self-contained trend page."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from matplotlib.image import imread

from reports.history import INDEX, KEY_METRICS, append, read_index, render_trend

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DAY = 86_400.0
T0 = datetime(2026, 11, 17, 21, 0, tzinfo=UTC).timestamp()


def target(metric: str, measured: float | None, verdict: str = "pass", target_text: str = "") -> dict[str, Any]:
    return {"group": "caller experience", "metric": metric, "title": metric, "target": target_text, "alert": None,
            "measured": measured, "unit": "", "verdict": verdict, "note": "", "alerting": False,
            "lower_is_better": True}


def make_run(tmp_path: Path, name: str, scenario: str, started: float, verdict: str,
             rows: list[dict[str, Any]]) -> tuple[dict[str, Any], Path]:
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "report.html"
    report.write_text("<html></html>", encoding="utf-8")
    summary = {"verdict": verdict, "verdict_reason": "", "scenario": scenario, "run_dir": str(run_dir),
               "targets": rows, "config": {"name": scenario},
               "report": {"generated_at": started + 600, "started_at": started}}
    return summary, report


class PageParser(HTMLParser):
    """The table rows of the runs table (cell texts and links) and every <img> src."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.alts: list[str] = []
        self.scripts = 0
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "a" and self._in_body:
            self.links.append(values.get("href") or "")
        elif tag == "img":
            self.images.append(values.get("src") or "")
            self.alts.append(values.get("alt") or "")
        elif tag in ("script", "link") or (values.get("src") or "").startswith("http"):
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def three_runs(tmp_path: Path) -> tuple[Path, list[tuple[dict[str, Any], Path]]]:
    history = tmp_path / "history"
    runs = [
        make_run(tmp_path, "r1-demo", "demo", T0, "pass",
                 [target("response_latency_p95_ms", 600.0, target_text="<= 800 ms"),
                  target("worker_availability", 1.0, target_text=">= 0.999"),
                  target("memory_growth_mb_per_1000_calls", None, "not_measured"),
                  target("custom_metric", 3.0)]),
        make_run(tmp_path, "r2-soak", "soak", T0 + DAY, "fail",
                 [target("response_latency_p95_ms", 950.0, "fail", "<= 800 ms"),
                  target("worker_availability", 0.97, "fail", ">= 0.999"),
                  target("custom_metric", 4.0)]),
        make_run(tmp_path, "r3-demo", "demo", T0 + 2 * DAY, "pass",
                 [target("response_latency_p95_ms", 640.0, target_text="<= 800 ms"),
                  target("worker_availability", 1.0, target_text=">= 0.999"),
                  target("only_once", 1.0)]),
    ]
    return history, runs


def test_append_is_idempotent_per_run_dir(tmp_path: Path) -> None:
    history, runs = three_runs(tmp_path)
    for summary, report in runs:
        append(history, summary, report)
    # Re-reporting the first run (a changed verdict) replaces its line.
    summary, report = runs[0]
    append(history, {**summary, "verdict": "fail"}, report)

    lines = (history / INDEX).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    entries = [json.loads(line) for line in lines]
    by_run = {Path(e["run_dir"]).name: e for e in entries}
    assert set(by_run) == {"r1-demo", "r2-soak", "r3-demo"}
    first = by_run["r1-demo"]
    assert first["verdict"] == "fail"
    assert first["scenario"] == "demo" and first["started_at"] == T0 and first["generated_at"] == T0 + 600
    assert first["metrics"] == {"response_latency_p95_ms": 600.0, "worker_availability": 1.0,
                                "memory_growth_mb_per_1000_calls": None, "custom_metric": 3.0}
    assert first["report"] == "../runs/r1-demo/report.html"  # relative to the history folder
    assert (history / first["report"]).resolve() == runs[0][1].resolve()


def test_same_run_from_another_working_directory_is_one_line(tmp_path: Path, monkeypatch) -> None:
    history, runs = three_runs(tmp_path)
    summary, report = runs[0]
    append(history, summary, report)
    monkeypatch.chdir(tmp_path)
    append(history, {**summary, "run_dir": "runs/r1-demo"}, Path("runs/r1-demo/report.html"))
    assert len(read_index(history)) == 1


def test_torn_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    history, runs = three_runs(tmp_path)
    append(history, *runs[0])
    with (history / INDEX).open("a", encoding="utf-8") as index:
        index.write('{"run_dir": "x", "scen\n[1, 2]\n')  # a torn line and a foreign one
    append(history, *runs[1])
    assert [Path(e["run_dir"]).name for e in read_index(history)] == ["r1-demo", "r2-soak"]
    with (history / INDEX).open("a", encoding="utf-8") as index:
        index.write('{"run_dir": "torn at the end')
    assert len(read_index(history)) == 2
    assert render_trend(history).exists()


def test_trend_page_table_and_embedded_plots(tmp_path: Path) -> None:
    history, runs = three_runs(tmp_path)
    for summary, report in runs:
        append(history, summary, report)
    append(history, *runs[0])
    page = render_trend(history)
    assert page == history / "trend.html"

    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    # Newest first: date, scenario, verdict, link.
    assert [row[1:3] for row in parser.rows] == [["demo", "pass"], ["soak", "fail"], ["demo", "pass"]]
    assert parser.rows[0][0] == "2026-11-19 21:00 UTC"
    assert parser.links == ["../runs/r3-demo/report.html", "../runs/r2-soak/report.html", "../runs/r1-demo/report.html"]
    assert all((history / link).exists() for link in parser.links)
    assert parser.scripts == 0

    # Two key metrics measured, plus custom_metric (measured twice); only_once has a single value: no plot.
    assert len(parser.images) == 3
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix):], validate=True)
        assert png.startswith(PNG_MAGIC) and len(png) > 2000
    text = page.read_text(encoding="utf-8")
    # Key metrics no run measured are named, not silently left out.
    assert "memory_growth_mb_per_1000_calls" in text.split("Not measured in any run:")[1]
    assert set(KEY_METRICS) >= {"response_latency_p95_ms", "worker_availability"}


def red_pixels(png: bytes) -> int:
    pixels = imread(io.BytesIO(png), format="png")
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    return int(red.sum())


def plots_by_metric(page: Path) -> dict[str, bytes]:
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return {alt: base64.b64decode(src.split(",", 1)[1]) for alt, src in zip(parser.alts, parser.images, strict=True)}


def test_failing_runs_are_red_and_passing_ones_are_not(tmp_path: Path) -> None:
    history, runs = three_runs(tmp_path)
    append(history, *runs[0])
    append(history, *runs[2])
    calm = plots_by_metric(render_trend(history))
    assert set(calm) == {"response_latency_p95_ms", "worker_availability"}
    assert red_pixels(calm["response_latency_p95_ms"]) == 0
    append(history, *runs[1])
    stormy = plots_by_metric(render_trend(history))
    assert red_pixels(stormy["response_latency_p95_ms"]) > 20


def test_empty_history_renders_a_page(tmp_path: Path) -> None:
    page = render_trend(tmp_path / "new-history")
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    assert parser.rows == [] and parser.images == []
    assert "No metric has been measured yet" in page.read_text(encoding="utf-8")
