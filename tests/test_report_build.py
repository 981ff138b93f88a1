"""``voicechaos report``: the files it writes, its exit code, and what it says when inputs are missing."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from harness.cli import main
from reports.build import build_report
from reports.runfolder import load_run
from tests.report_fixtures import call, turn, write_run


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src") or "")
        if attrs.get("id"):
            self.ids.add(attrs["id"])


def test_report_writes_html_summary_junit_and_exits_nonzero_naming_the_target(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    code = main(["report", str(run)])
    out = capsys.readouterr().out
    assert code == 1
    assert "missed worker_availability: measured 0.75" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "fail" and "worker_availability" in summary["verdict_reason"]
    assert {r["metric"] for r in summary["targets"]} >= {"worker_availability", "memory_usage_pct",
                                                          "stt_latency_p95_ms", "event_emission_p95_ms"}
    assert summary["config"]["name"] == "fixture"
    suite = ET.parse(run / "junit.xml").getroot().find("testsuite")
    failed = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert "worker_availability" in failed and "memory_usage_pct" not in failed
    page = _Images()
    page.feed((run / "report.html").read_text())
    assert {"targets", "triage", "verdict", "faults"} <= page.ids
    assert len(page.srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert "http://" not in (run / "report.html").read_text().split("<body>", 1)[1].split("</style>")[0]


def test_records_are_compiled_once_and_rebuilt_when_the_log_grows(tmp_path):
    run = write_run(tmp_path / "run")
    load_run(run)
    compiled = (run / "records" / "turns.parquet").stat().st_mtime_ns
    load_run(run)
    assert (run / "records" / "turns.parquet").stat().st_mtime_ns == compiled
    extra = call(9, 40.0, 5.0, "completed", [turn(0, "greeting", 40.0, 100.0)])
    with (run / "events.jsonl").open("a") as log:
        log.write(json.dumps({"event": "call_ended", "time": 0, **extra}) + "\n")
    assert len(load_run(run).calls) == 5


def test_missing_runtime_metrics_and_summary_say_what_is_missing(tmp_path):
    run = write_run(tmp_path / "run", runtime=False, summary=False)
    result = build_report(run)
    html = (run / "report.html").read_text()
    assert "runtime_metrics.jsonl" in html and "summary.json" in html
    by = {r.metric: r for r in result.rows}
    assert by["memory_usage_pct"].verdict == "not_measured"
    assert by["harness_lateness_p99_ms"].verdict == "not_measured"


def test_empty_run_gives_a_report_not_a_crash(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text('{"event":"run_started","time":1,"config":{"name":"empty"}}\n'
                                      '{"event":"call_ended","time":2,"call_id":0,"turns":[{"ind')  # torn line
    result = build_report(run)
    assert result.verdict == "not_measured" and result.exit_code == 1
    html = (run / "report.html").read_text()
    assert "the event log holds no call" in html and "torn line" in html


def test_killed_run_keeps_unfinished_calls(tmp_path):
    run = write_run(tmp_path / "run", summary=False)
    with (run / "events.jsonl").open("a") as log:
        log.write(json.dumps({"event": "call_started", "time": 1_800_000_050.0, "call_id": 7}) + "\n")
    data = load_run(run)
    assert data.calls.set_index("call_id").loc[7, "outcome"] == "unfinished"


def test_not_a_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 3
    assert "no events.jsonl" in capsys.readouterr().err


def test_baseline_flags_a_regression_and_history_draws_a_trend(tmp_path, capsys):
    good = write_run(tmp_path / "good", calls=[call(0, 0.0, 10.0, "completed",
                                                    [turn(0, "greeting", 0.0, 100.0), turn(1, "reply", 3.0, 500.0)])])
    build_report(good)
    bad = write_run(tmp_path / "bad")
    history = tmp_path / "history"
    code = main(["report", str(bad), "--baseline", str(good), "--history", str(history)])
    out = capsys.readouterr().out
    assert code == 1 and "regressions against the baseline" in out and "response_latency_p95_ms" in out
    summary = json.loads((bad / "summary.json").read_text())
    assert "response_latency_p95_ms" in summary["baseline"]["regressions"]
    assert (history / "trend.html").exists() and len((history / "index.jsonl").read_text().splitlines()) == 1
    assert os.path.getsize(bad / "report.html") > 10_000
