"""The load commands' arguments and refusals, before any process starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.caller import Dial
from harness.cli import _seconds, main
from harness.load.launch import soak_plan_seconds
from harness.load.settings import LoadSettings, SettingsError, dial_from_json, dial_json
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("45s", 45), ("10m", 600), ("2h", 7200),
                                               ("1h30m", 5400), ("1.5h", 5400)])
def test_durations_read_as_a_person_writes_them(text: str, seconds: float) -> None:
    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "2d", "-5m"])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _seconds(text)


def test_a_soak_runs_the_scenarios_shape_stretched_to_its_duration() -> None:
    demo = load_scenario(ROOT / "scenarios" / "demo.yaml")  # ramp 10 s + hold 130 s
    assert soak_plan_seconds(demo, None) == 140
    assert soak_plan_seconds(demo, 7200) == 7200


def test_a_malformed_scenario_is_refused_before_anything_starts(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscript: [{say: hi}]\nload: {shape: ramp, users: -1, ramp: 5}\n")
    assert main(["soak", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 3
    assert "load.ramp.users" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_master_listening_beyond_loopback_needs_allow_remote(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["soak", str(ROOT / "scenarios" / "demo.yaml"), "--workers", "1", "--master-bind-host", "0.0.0.0",
                 "--runs-dir", str(tmp_path / "runs")])
    assert code == 3
    assert "--allow-remote" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_worker_refuses_a_master_off_loopback_without_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", str(ROOT / "scenarios" / "demo.yaml"), "--master-host", "10.1.2.3"]) == 3
    assert "not on loopback" in capsys.readouterr().err


def test_the_settings_and_the_dial_survive_the_trip_through_the_environment() -> None:
    dial = Dial(webhook_url="http://127.0.0.1:9/voice", auth_token="t")
    settings = LoadSettings(scenario=Path("s.yaml"), role="master", dial=dial_json([dial]), duration_s=30)
    again = LoadSettings.model_validate_json(settings.to_env())
    assert again == settings and dial_from_json(again.dial) == [dial]
    with pytest.raises(SettingsError):
        dial_from_json("")
