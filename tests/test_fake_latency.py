"""Latency distributions of the fake providers, their config form, and the per-stream schedule; no sockets."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from pydantic import TypeAdapter, ValidationError

from fake_providers.gate import Plan
from fake_providers.latency import Distribution, Fixed, Latency, LogNormal, Normal, Uniform

N = 20_000
parse = TypeAdapter(Distribution).validate_python


def samples(dist: Fixed | Uniform | Normal | LogNormal, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [dist.sample(rng) for _ in range(N)]


def test_fixed_is_exact() -> None:
    assert set(samples(Fixed(value=0.3))) == {0.3}


def test_uniform_stays_in_range_and_centres() -> None:
    xs = samples(Uniform(low=0.05, high=0.1))
    assert 0.05 <= min(xs) and max(xs) <= 0.1
    assert statistics.fmean(xs) == pytest.approx(0.075, abs=0.001)
    # spread over the whole range, not stuck at one end
    assert min(xs) < 0.051 and max(xs) > 0.099


def test_normal_mean_and_spread() -> None:
    xs = samples(Normal(mean=0.15, stddev=0.02))
    assert statistics.fmean(xs) == pytest.approx(0.15, abs=0.001)
    assert statistics.stdev(xs) == pytest.approx(0.02, rel=0.05)


def test_normal_is_never_negative() -> None:
    xs = samples(Normal(mean=0.01, stddev=0.05))
    assert min(xs) == 0.0  # clipped, and a good share of draws hit the clip
    assert sum(x == 0.0 for x in xs) > N // 5


def test_lognormal_median_and_tail() -> None:
    xs = sorted(samples(LogNormal(median=0.12, sigma=0.5)))
    assert xs[N // 2] == pytest.approx(0.12, rel=0.03)
    assert min(xs) > 0
    # a right tail: p99 far above the median, as real service latency has
    assert xs[int(N * 0.99)] > 2.5 * xs[N // 2]


def test_cap_clips_the_tail() -> None:
    xs = samples(LogNormal(median=0.1, sigma=1.0, cap=0.5))
    assert max(xs) == 0.5


def test_same_seed_same_draws() -> None:
    dist = Uniform(low=0.0, high=1.0)
    assert samples(dist, seed=7)[:50] == samples(dist, seed=7)[:50]
    assert samples(dist, seed=7)[:50] != samples(dist, seed=8)[:50]


def test_config_forms() -> None:
    assert parse(0.25) == Fixed(value=0.25)
    assert parse({"kind": "uniform", "low": 0.1, "high": 0.2}) == Uniform(low=0.1, high=0.2)
    latency = Latency.model_validate({"ttfb": {"kind": "lognormal", "median": 0.1, "sigma": 0.3}})
    assert latency.ttfb == LogNormal(median=0.1, sigma=0.3)
    assert latency.chunk_interval == Fixed(value=0.0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "gamma", "value": 1}, "kind"),
        ({"kind": "uniform", "low": 0.2, "high": 0.1}, "high (0.1) is below low (0.2)"),
        ({"kind": "fixed", "value": -1}, "value"),
        ({"kind": "normal", "mean": 0.1}, "stddev"),
        ({"kind": "fixed", "value": 1, "typo": 2}, "typo"),
    ],
)
def test_invalid_distributions_name_the_problem(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Latency.model_validate({"ttfb": raw})
    assert field in str(info.value)


def test_plan_schedule_first_byte_then_intervals() -> None:
    latency = Latency(ttfb=Fixed(value=0.3), chunk_interval=Uniform(low=0.02, high=0.05))
    dues = Plan(latency, random.Random(3)).schedule(10.0, 6)
    assert dues[0] == pytest.approx(10.3)
    gaps = [b - a for a, b in itertools.pairwise(dues)]
    assert all(0.02 <= g <= 0.05 for g in gaps)
    assert Plan(latency, random.Random(3)).schedule(10.0, 0) == []
