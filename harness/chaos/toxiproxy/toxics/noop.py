"""``noop``: hands every byte on unchanged. A valid type in the API; also what a toxic does on a connection where its
toxicity was not drawn."""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from harness.chaos.toxiproxy.toxics.base import PassThrough, Toxic, ToxicState


@dataclass(frozen=True)
class Noop(Toxic):
    type_name = "noop"

    def start(self, now: float, rng: Random) -> ToxicState:
        return PassThrough()
