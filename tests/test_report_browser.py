"""The report opened in a real browser (Debian's headless Chromium): every plot loads, the page is not blank, and the
targets table is there. The run folder is made by ``bench.synthetic_run`` with the harness's own shapes; the last
test checks that premise (its figures are the ones ``harness.summary`` computes from the lines it wrote)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread, imsave

from bench.synthetic_run import write_run
from harness.eventlog import read_events
from harness.scenario import Targets
from harness.summary import summarize
from reports.build import build_report
from tests.chromium import dump_dom, image_report, screenshot, skip_without_chromium, table_rows

WIDTH, HEIGHT = 1400, 2400
TOP = 700  # the verdict line and the start of the targets table, in a 1400 px wide window


def _rgb(png: Path) -> np.ndarray:
    pixels = imread(png)[..., :3]
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).round().astype(np.uint8)
    return pixels


def _colours(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, 3), axis=0))


def _ink(pixels: np.ndarray) -> float:
    """Share of the pixels that are not (near) white."""
    return float((pixels.reshape(-1, 3).min(axis=1) < 235).mean())


def _png_of(colours: np.ndarray) -> str:
    out = io.BytesIO()
    imsave(out, colours, format="png")
    return base64.b64encode(out.getvalue()).decode("ascii")


@skip_without_chromium
def test_probe_tells_a_loaded_image_from_a_broken_one(tmp_path: Path) -> None:
    red = np.zeros((3, 4, 3))
    red[..., 0] = 1.0  # 4 x 3 pixels of pure red
    page = tmp_path / "page.html"
    page.write_text(f"""<!doctype html><html><head><title>probe</title></head><body>
<h1>Two images: one embedded, one missing</h1>
<img alt="red" style="width:400px;height:300px" src="data:image/png;base64,{_png_of(red)}">
<img alt="broken" src="missing.png">
</body></html>""")

    images = image_report(page)

    assert [image["alt"] for image in images] == ["red", "broken"]
    loaded, broken = images
    assert loaded["complete"] and (loaded["naturalWidth"], loaded["naturalHeight"]) == (4, 3)
    assert (loaded["width"], loaded["height"]) == (400, 300)
    assert loaded["src"].startswith("data:image/png;base64,")
    assert broken["naturalWidth"] == 0  # the file is not there: the probe must not call it loaded
    png = tmp_path / "page.png"
    screenshot(page, png, width=800, height=600)
    pixels = _rgb(png)
    assert pixels.shape[:2] == (600, 800)
    reds = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert reds.sum() > 0.8 * 400 * 300  # the image was drawn at its rendered size
    # the probe's copy is not the page: the original is left as it was
    assert "voicechaos-imgs" not in page.read_text()


def test_table_rows_reads_the_cells_inside_the_element_only() -> None:
    dom = """<table><tr><td>outside</td></tr></table>
<section id="targets"><table><thead><tr><th>metric</th></tr></thead>
<tbody><tr><td>Response latency <code>response_latency_p95_ms</code></td><td>FAIL</td></tr>
<tr><td>Availability</td><td>pass</td></tr></tbody></table></section><p>after <table><tr><td>x</td></tr></table>"""
    assert table_rows(dom, "targets") == [["metric"], ["Response latency response_latency_p95_ms", "FAIL"],
                                          ["Availability", "pass"]]
    with pytest.raises(AssertionError, match="no element with id 'nowhere'"):
        table_rows(dom, "nowhere")


@skip_without_chromium
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, calls=30, duration_s=300)
    result = build_report(run_dir)
    page = Path(result.html_path)
    assert page.is_file()

    images = image_report(page)
    assert len(images) >= 6, f"expected the plots, found {len(images)} images"
    for image in images:
        assert image["src"].startswith("data:image/"), f"{image['alt']!r} is not embedded: {image['src']}"
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
        assert image["width"] > 100 and image["height"] > 50, f"{image['alt']!r} is not shown: {image}"

    png = tmp_path / "report.png"
    screenshot(page, png, width=WIDTH, height=HEIGHT)
    pixels = _rgb(png)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    assert _colours(pixels) > 200 and _ink(pixels) > 0.03, "the page looks blank"
    top = pixels[:TOP]
    assert _colours(top) > 50 and _ink(top) > 0.02, "the top of the page (verdict, targets table) looks blank"

    rows = table_rows(dump_dom(page), "targets")
    data = [row for row in rows if len(row) > 2]
    assert len(data) >= 10, rows
    text = " ".join(" ".join(row) for row in data)
    for metric in ("response_latency_p95_ms", "worker_availability", "call_success_rate"):
        assert metric in text


def test_synthetic_run_is_what_the_harness_writes(tmp_path: Path) -> None:
    """The generator writes what the harness writes (``write_run`` itself checks the record keys against
    ``CallRecord``/``TurnRecord``), and the report judges the callers' side of it as ``harness.summary`` does."""
    run_dir = tmp_path / "run"
    written = write_run(run_dir, calls=200, duration_s=600, seed=3)
    events = read_events(run_dir / "events.jsonl")
    times = [event["time"] for event in events]
    assert times == sorted(times)
    assert written["events"] == len(events)
    kinds = [event["event"] for event in events]
    assert kinds[:3] == ["run_started", "stack_started", "load_started"] and kinds[-1] == "run_finished"
    calls = [{k: v for k, v in e.items() if k not in ("event", "time")} for e in events if e["event"] == "call_ended"]
    assert len(calls) == 200 and written["turns"] == sum(len(call["turns"]) for call in calls)
    assert sum(kind == "turn" for kind in kinds) == written["turns"]
    # the report and the harness's console judge the callers' side alike: same figures, same verdicts
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = summarize(calls, summary["harness_lateness"], Targets(**summary["config"]["targets"]),
                         summary["recordings"])
    report = build_report(run_dir)
    by_metric = {row.metric: row for row in report.rows}
    for row in expected["targets"]:
        assert by_metric[row["metric"]].measured == pytest.approx(row["measured"]), row["metric"]
        assert by_metric[row["metric"]].verdict == row["verdict"], row["metric"]
    # something to see: slow turns, a dropped or refused call, latency up in the fault window
    assert report.verdict == "fail"
    [fault] = report.summary["fault_windows"]
    assert fault["calls_started"] > 0 and fault["availability"] < 1.0
    readings = (run_dir / "runtime_metrics.jsonl").read_text().splitlines()
    first = json.loads(readings[0])
    assert written["runtime_readings"] == len(readings) and set(first) == {"t", "samples"}
    assert 'runtime_stt_final_latency_seconds_bucket{le="+Inf",provider="deepgram"}' in first["samples"]
