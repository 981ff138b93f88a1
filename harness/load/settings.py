"""What ``voicechaos ui|soak|worker`` tells the Locust processes it starts, through one environment variable.

Locust imports the locustfile before it parses its command line, and the locustfile must know the scenario by then
(its load shape becomes a ``LoadTestShape`` class at import). So the launcher passes the settings as JSON in
``VOICECHAOS_LOAD``; a worker on another machine gets the same from ``voicechaos worker``.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.caller import Dial

ENV = "VOICECHAOS_LOAD"


class LoadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: Path
    role: Literal["local", "master", "worker"] = "local"
    mode: Literal["ui", "soak"] = "ui"
    runs_dir: Path = Path("runs")
    run_dir: Path | None = Field(None, description="the run folder (created by the launcher, so Locust's CSV and "
                                                   "HTML can be written into it)")
    allow_remote: bool = False
    use_shape: bool = Field(False, description="drive the users by the scenario's load shape (soak) instead of the "
                                               "web UI's user count")
    duration_s: float | None = Field(None, gt=0, description="soak: the run's length; ui: the longest one test "
                                                             "started from the browser may run")
    max_calls: int = Field(100_000, ge=1, description="the most calls one load process places")
    control_url: str | None = Field(None, description="the launcher's run control API (local and master only)")
    dial: str = Field("", description="where calls go (the Dial as JSON), known once the launcher's stack is up")
    redial_after_s: float = Field(1.0, ge=0, description="a caller's pause between the end of a call and the next")

    def to_env(self) -> str:
        return self.model_dump_json()


class SettingsError(ValueError):
    pass


def settings_from_env() -> LoadSettings:
    raw = os.environ.get(ENV)
    if not raw:
        raise SettingsError(f"{ENV} is not set: start Locust with `voicechaos ui|soak|worker SCENARIO`")
    try:
        return LoadSettings.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise SettingsError(f"{ENV}: {exc}") from None


def dial_json(dials: list[Dial]) -> str:
    """The run's dials, one per caller group, for the Locust processes. The WebRTC callers' impairment relay lives
    in the launcher's process and is not sent: Locust's calls take a clean path (see ``harness/load/launch.py``)."""
    return json.dumps([{f.name: getattr(dial, f.name) for f in fields(dial) if f.name != "caller_leg"}
                       for dial in dials])


def dial_from_json(raw: str) -> list[Dial]:
    if not raw:
        raise SettingsError("no target yet: a worker gets it from the master with the first spawn message")
    return [Dial(**item) for item in json.loads(raw)]
