"""The targets table as a JUnit XML file: one test case per target, what a nightly CI job reads.

CI tools (Jenkins, GitLab, GitHub test reporters) read the shape of the Jenkins JUnit schema: ``testsuites`` >
``testsuite`` (``tests``/``failures``/``errors``/``skipped`` counts, ``timestamp`` without a time zone) > ``testcase``
(``classname``, ``name``, ``time``) holding at most one ``failure`` or ``skipped`` and an optional ``system-out``.

How each verdict maps:
- fail: ``<failure message="measured X, target Y">`` with the row's note as the text;
- not_measured: ``<skipped>``, never a pass: a target nobody measured has not been met;
- tracked and pass: a passing case, the measured value in ``<system-out>``.
An invalid run (the harness itself was the bottleneck) adds one failing ``harness_validity`` case, so CI goes red even
when every target happened to pass.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from reports.model import FAIL, NOT_MEASURED, TargetRow

HARNESS_CLASSNAME = "voicechaos.harness"
HARNESS_VALIDITY = "harness_validity"


def format_value(value: float | None, unit: str = "") -> str:
    """A measured value as a person reads it: no float noise, no exponent for large counts."""
    if value is None:
        return "not measured"
    if value == int(value) and abs(value) < 1e15:
        text = str(int(value))
    elif abs(value) >= 1000:
        text = f"{value:.1f}"
    else:
        text = f"{value:.4g}"
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def classname(group: str) -> str:
    """``voicechaos.<group>`` with the group made dot- and space-free: CI tools split class names on dots."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", group.strip().lower()).strip("_")
    return f"voicechaos.{slug or 'targets'}"


def _case(suite: ET.Element, cls: str, name: str) -> ET.Element:
    # time is required by the schema; a target is judged after the run, so it takes no time of its own.
    return ET.SubElement(suite, "testcase", {"classname": cls, "name": name, "time": "0"})


def junit_xml(suite: str, rows: list[TargetRow], *, invalid_reason: str | None = None,
              timestamp: datetime | None = None) -> str:
    """The JUnit XML text of one run's targets. ``timestamp`` defaults to now (UTC)."""
    when = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None, microsecond=0)
    root = ET.Element("testsuites", {"name": "voicechaos"})
    element = ET.SubElement(root, "testsuite", {"name": suite, "timestamp": when.isoformat(), "time": "0"})
    failures = skipped = 0
    for row in rows:
        case = _case(element, classname(row.group), row.metric)
        measured = format_value(row.measured, row.unit)
        if row.verdict == FAIL:
            failures += 1
            failure = ET.SubElement(case, "failure",
                                    {"message": f"measured {measured}, target {row.target}", "type": "target_missed"})
            failure.text = row.note or row.title
        elif row.verdict == NOT_MEASURED:
            skipped += 1
            ET.SubElement(case, "skipped", {"message": f"not measured: {row.note or 'no data'}"})
        else:
            # pass and tracked: the value goes to system-out so the CI's test view shows it.
            out = ET.SubElement(case, "system-out")
            out.text = f"{row.title}: measured {measured}, target {row.target}" + (f" ({row.note})" if row.note else "")
    if invalid_reason is not None:
        failures += 1
        case = _case(element, HARNESS_CLASSNAME, HARNESS_VALIDITY)
        failure = ET.SubElement(case, "failure", {"message": f"invalid run: {invalid_reason}", "type": "invalid_run"})
        failure.text = invalid_reason
    counts = {"tests": len(rows) + (invalid_reason is not None), "failures": failures, "errors": 0, "skipped": skipped}
    for key, value in counts.items():
        element.set(key, str(value))
        if key != "skipped":  # the schema's testsuites has no skipped count (only its testsuite has)
            root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: Path, suite: str, rows: list[TargetRow], *, invalid_reason: str | None = None,
                timestamp: datetime | None = None) -> Path:
    path = Path(path)
    path.write_text(junit_xml(suite, rows, invalid_reason=invalid_reason, timestamp=timestamp), encoding="utf-8")
    return path
