"""Latency as a distribution: how long a fake provider takes, drawn per request from a seeded generator.

A real provider's latency is not a number but a spread (a lognormal body with a tail, mostly), and the harness
measures percentiles, so the fakes draw every delay from a :class:`Distribution`. Two delays describe any
streaming provider (the `Latency` model):

- ``ttfb``: time to first byte. For TTS and the LLM it runs from the request to the first audio byte or token;
  for live STT it runs from the detected end of speech (the endpoint) to the final transcript.
- ``chunk_interval``: the gap between consecutive chunks of one stream (audio chunks, token chunks); for live
  STT the delay of an interim result after the audio that produced it.

All values are seconds. A sample is never negative. A bare number in a config file means a fixed delay:
``ttfb: 0.3`` is ``ttfb: {kind: fixed, value: 0.3}``.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: An optional ceiling (seconds): a sample above it is clipped to it (tails without absurd outliers).
    cap: float | None = Field(default=None, ge=0)

    def sample(self, rng: random.Random) -> float:
        value = max(0.0, self._draw(rng))
        return value if self.cap is None else min(value, self.cap)

    def _draw(self, rng: random.Random) -> float:
        raise NotImplementedError


class Fixed(_Dist):
    kind: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)

    def _draw(self, rng: random.Random) -> float:
        return self.value


class Uniform(_Dist):
    kind: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self

    def _draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


class Normal(_Dist):
    """A normal spread around ``mean``; samples below zero are clipped to zero."""

    kind: Literal["normal"] = "normal"
    mean: float = Field(ge=0)
    stddev: float = Field(ge=0)

    def _draw(self, rng: random.Random) -> float:
        return rng.gauss(self.mean, self.stddev)


class LogNormal(_Dist):
    """The usual shape of service latency: ``median`` is exp(mu) and ``sigma`` the spread of log(latency)."""

    kind: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def _draw(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


def _number_is_fixed(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"kind": "fixed", "value": value}
    return value


Distribution = Annotated[
    Fixed | Uniform | Normal | LogNormal,
    Field(discriminator="kind"),
    BeforeValidator(_number_is_fixed),
]


class Latency(BaseModel):
    """The two delays of a streaming provider (see the module docstring for what each means per provider)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttfb: Distribution
    chunk_interval: Distribution = Fixed(value=0.0)


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low=low, high=high)
