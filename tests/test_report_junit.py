"""junit.xml: what CI reads from a run. Parsed back and checked against the JUnit schema's shape."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from reports.junit import junit_xml, write_junit
from reports.model import FAIL, NOT_MEASURED, PASS, TRACKED, TargetRow

WHEN = datetime(2026, 11, 25, 21, 19, 11, tzinfo=UTC)

# What the Jenkins JUnit schema (the shape GitLab, GitHub reporters and Jenkins read) allows, element by element:
# required attributes and the children it may hold.
REQUIRED = {"testsuite": {"name", "tests"}, "testcase": {"name"}}
ALLOWED = {"testsuite": {"name", "tests", "failures", "errors", "skipped", "disabled", "time", "timestamp", "hostname",
                         "id", "package", "file", "log", "url", "version"},
           "testcase": {"name", "classname", "time", "assertions", "status", "class", "file", "line"},
           "failure": {"message", "type"}, "error": {"message", "type"}, "skipped": {"message"},
           "testsuites": {"name", "time", "tests", "failures", "disabled", "errors"}}
CHILDREN = {"testsuites": {"testsuite"}, "testsuite": {"properties", "testcase", "system-out", "system-err"},
            "testcase": {"skipped", "error", "failure", "system-out", "system-err"}}
NUMBER = re.compile(r"^\d+$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")  # the schema's: no time zone


def assert_junit_shape(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for element in root.iter():
        tag = element.tag
        assert tag in ALLOWED or tag in ("system-out", "system-err", "properties", "property"), tag
        assert REQUIRED.get(tag, set()) <= set(element.attrib), (tag, element.attrib)
        if tag in ALLOWED:
            assert set(element.attrib) <= ALLOWED[tag], (tag, element.attrib)
        if tag in CHILDREN:
            assert {child.tag for child in element} <= CHILDREN[tag], tag
        if tag == "testcase":
            outcome = [child.tag for child in element if child.tag in ("skipped", "error", "failure")]
            assert len(outcome) <= 1, "a test case has at most one outcome"
        for key in ("tests", "failures", "errors", "skipped"):
            if key in element.attrib:
                assert NUMBER.match(element.attrib[key]), (tag, key)
    for suite in root:
        assert TIMESTAMP.match(suite.attrib["timestamp"])


def row(metric: str, verdict: str, measured: float | None, *, group: str = "caller experience", target: str = "",
        unit: str = "ms", note: str = "") -> TargetRow:
    return TargetRow(group=group, metric=metric, title=metric.replace("_", " "), target=target, alert=None,
                     measured=measured, unit=unit, verdict=verdict, note=note)


ROWS = [
    row("response_latency_p95_ms", FAIL, 912.4, target="<= 800 ms", note="240 replies; <slow> & late"),
    row("max_silence_gap_ms", PASS, 420.0, target="<= 1500 ms"),
    row("memory_usage_pct", NOT_MEASURED, None, group="worker health", target="< 80 %", unit="%",
        note="no runtime metrics"),
    row("workflow_latency_p95_ms", TRACKED, 1840.0, group="workflow isolation", target="tracked"),
]


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {case.attrib["name"]: case for case in root.iter("testcase")}


def test_one_case_per_target_with_counts_and_messages() -> None:
    root = ET.fromstring(junit_xml("demo", ROWS, timestamp=WHEN))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.attrib["name"] == "demo"
    assert suite.attrib["timestamp"] == "2026-11-25T21:19:11"
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["skipped"], suite.attrib["errors"]) == (
        "4", "1", "1", "0")
    found = cases(root)
    assert list(found) == [r.metric for r in ROWS]
    assert found["response_latency_p95_ms"].attrib["classname"] == "voicechaos.caller_experience"
    assert found["memory_usage_pct"].attrib["classname"] == "voicechaos.worker_health"

    failure = found["response_latency_p95_ms"].find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "measured 912.4 ms, target <= 800 ms"
    assert failure.text == "240 replies; <slow> & late"  # escaped on the way out, intact on the way back

    skipped = found["memory_usage_pct"].find("skipped")
    assert skipped is not None and skipped.attrib["message"] == "not measured: no runtime metrics"
    assert found["memory_usage_pct"].find("failure") is None

    tracked = found["workflow_latency_p95_ms"]
    assert tracked.find("failure") is None and tracked.find("skipped") is None
    out = tracked.find("system-out")
    assert out is not None and "1840 ms" in (out.text or "")
    assert found["max_silence_gap_ms"].find("failure") is None


def test_invalid_run_adds_a_failing_harness_case() -> None:
    passing = [row("max_silence_gap_ms", PASS, 420.0, target="<= 1500 ms")]
    root = ET.fromstring(junit_xml("soak", passing, invalid_reason="harness send lateness p99 31 ms > 5 ms",
                                   timestamp=WHEN))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.attrib["tests"], suite.attrib["failures"]) == ("2", "1")
    case = cases(root)["harness_validity"]
    assert case.attrib["classname"] == "voicechaos.harness"
    failure = case.find("failure")
    assert failure is not None and "31 ms > 5 ms" in failure.attrib["message"]


def test_not_measured_never_passes_and_empty_run_is_valid_xml() -> None:
    root = ET.fromstring(junit_xml("empty", [row("call_success_rate", NOT_MEASURED, None, note="no calls")],
                                   timestamp=WHEN))
    assert_junit_shape(root)
    suite = root.find("testsuite")
    assert suite is not None
    # A CI job counting passes (tests - failures - errors - skipped) sees none.
    passes = int(suite.attrib["tests"]) - int(suite.attrib["failures"]) - int(suite.attrib["skipped"])
    assert passes == 0
    assert_junit_shape(ET.fromstring(junit_xml("nothing", [], timestamp=WHEN)))


def test_write_junit_writes_utf8_file(tmp_path) -> None:
    path = write_junit(tmp_path / "junit.xml", "demo", ROWS, timestamp=WHEN)
    root = ET.parse(path).getroot()
    assert len(list(root.iter("testcase"))) == len(ROWS)
