"""The incident runner's pieces: each side's scenario, the checks judged on measured figures, the contrast."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness import incidents
from harness.scenario import Check, ScenarioError, load_scenario, scenario_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def incident_scenario() -> dict:
    return {
        "name": "storage-outage",
        "incident": {
            "title": "a stalled store",
            "safeguard": "recording",
            "checks": [{"metric": "worker_availability", "broken": "< 0.95", "fixed": ">= 0.999"},
                       {"metric": "recordings_lost", "fixed": "== 0"}],
            "fixed": {"target": {"embedded": {"runtime": {"recording": {"spool": {"dir": "x"}}}}}},
            "quick": {"callers": {"count": 3}, "limits": {"duration": 60}},
        },
        "target": {"embedded": {"capacity": 6, "runtime": {"recording": {"s3": {"read_timeout_s": 30}}}}},
        "callers": {"count": 50},
        "script": ["hang_up"],
    }


def test_each_side_sets_its_mode_and_overrides_and_quick_shortens() -> None:
    scenario = scenario_from_mapping(incident_scenario(), "x.yaml")
    broken = incidents.variant(scenario, "broken", quick=False)
    fixed = incidents.variant(scenario, "fixed", quick=True)
    assert broken.target.embedded.runtime["safeguards"] == {"recording": "broken"}
    assert broken.target.embedded.runtime["recording"] == {"s3": {"read_timeout_s": 30}}
    assert broken.callers.count == 50 and broken.name == "storage-outage-broken"
    assert fixed.target.embedded.runtime["safeguards"] == {"recording": "fixed"}
    assert fixed.target.embedded.runtime["recording"] == {"s3": {"read_timeout_s": 30}, "spool": {"dir": "x"}}
    assert fixed.callers.count == 3 and fixed.limits.duration == 60 and fixed.name == "storage-outage-fixed-quick"


@pytest.mark.parametrize(("expression", "value", "held"), [
    ("< 0.95", 0.5, True), ("< 0.95", 0.95, False), (">= 0.999", 1.0, True), ("== 0", 0.0, True),
    ("== 0", 2.0, False), ("<= 800", None, None), ("> 1e-3", 0.01, True),
])
def test_checks_are_judged_on_measured_values_and_unmeasured_never_holds(expression: str, value: float | None,
                                                                          held: bool | None) -> None:
    assert Check.holds(expression, value) is held


def test_a_check_that_is_not_a_comparison_is_refused() -> None:
    data = incident_scenario()
    data["incident"]["checks"] = [{"metric": "x", "fixed": "about 3"}]
    with pytest.raises(ScenarioError, match=r"incident.checks\[0\].fixed: 'about 3' is not a comparison"):
        scenario_from_mapping(data, "x.yaml")


def test_the_contrast_names_each_side_and_what_it_showed() -> None:
    scenario = scenario_from_mapping(incident_scenario(), "x.yaml")
    assert scenario.incident is not None
    broken = incidents.Side("broken", figures={"worker_availability": 0.5, "recordings_lost": 6.0})
    broken.verdicts = incidents.judge(scenario.incident.checks, "broken", broken.figures)
    fixed = incidents.Side("fixed", figures={"worker_availability": 1.0, "recordings_lost": None})
    fixed.verdicts = incidents.judge(scenario.incident.checks, "fixed", fixed.figures)
    result = incidents.IncidentResult(scenario, [broken, fixed])
    out = io.StringIO()
    incidents.print_contrast(result, out)
    text = out.getvalue()
    assert "0.5 OK" in text and "1 OK" in text and "not measured NOT MEASURED" in text
    assert "broken: shows the incident" in text and "fixed: does NOT hold" in text
    assert result.exit_code == 1  # a fix that could not be measured is not a fix


def test_measured_figures_come_from_the_summary() -> None:
    summary = {"targets": [{"metric": "worker_availability", "measured": 0.9}],
               "runtime_metrics": {"figures": {"breaker_trips": 2.0}},
               "calls": {"total": 10, "outcomes": {"completed": 9, "dropped": 1}}, "runtime_restarts": 1}
    figures = incidents.measured(summary)
    assert figures["worker_availability"] == 0.9 and figures["breaker_trips"] == 2.0
    assert figures["calls_dropped"] == 1.0 and figures["calls_rejected"] == 0.0 and figures["runtime_restarts"] == 1


@pytest.mark.parametrize("path", incidents.incident_paths(), ids=lambda p: p.stem)
def test_every_incident_file_is_an_incident_with_both_sides_checked(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.incident is not None and scenario.name == path.stem
    assert any(c.broken for c in scenario.incident.checks) and any(c.fixed for c in scenario.incident.checks)
    for mode in incidents.MODES:
        for quick in (False, True):
            incidents.variant(scenario, mode, quick=quick)  # every side validates
