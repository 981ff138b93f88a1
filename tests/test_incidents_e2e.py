"""Every incident of the library in its quick form, both ways, on the embedded stack: the broken runtime must show
the incident and the fixed one must hold, judged on the measured figures (never on the mode flag)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness import incidents

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.mark.parametrize("path", incidents.incident_paths(), ids=lambda p: p.stem)
async def test_the_broken_runtime_shows_the_incident_and_the_fixed_one_holds(path: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    result = await incidents.run_incident(path, quick=True, runs_dir=tmp_path / "runs", out=out)
    report = out.getvalue()
    sides = {side.mode: side for side in result.sides}
    assert set(sides) == {"broken", "fixed"}, report
    for side in result.sides:
        assert not side.invalid, f"{side.mode}: the harness was late; no verdict\n{report}"
        assert side.verdicts, report
        for metric, held in side.verdicts.items():
            assert held is True, f"{side.mode}: {metric} = {side.figures.get(metric)}\n{report}"
    assert result.exit_code == 0, report
