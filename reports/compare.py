"""Tonight against a baseline run: each target metric's change and whether it is a regression.

Both sides are ``summary.json`` dicts as the report writes them; only their ``targets`` lists are read.

A metric regresses when:
- it moved in its bad direction by more than ``tolerance`` (relative), or
- its verdict went from pass to fail, whatever the size of the move.
For a rate in [0, 1] where higher is better (availability, success rate), the relative change is taken on the bad
share ``1 - x``: availability 1.0 -> 0.98 is a 2 % absolute drop, small relative to 1.0, but it is 2 % of calls refused
where none were, which is what the mission's ">= 99.9 %" targets are about. The same holds for percentages in
[0, 100] (bad share ``100 - x``).
A bad share (or a lower-is-better value) growing from zero is always a regression: there is no relative scale to
forgive it by, and going from "no recordings lost" to "one lost" is exactly what a baseline comparison must catch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from reports.model import FAIL, PASS

BETTER, WORSE, SAME = "better", "worse", "same"
BOTH, ADDED, REMOVED = "both", "added", "removed"


@dataclass(frozen=True)
class Change:
    """One metric, baseline -> current."""

    metric: str
    status: str  # BOTH, ADDED (only in the current run), REMOVED (only in the baseline)
    baseline: float | None
    current: float | None
    absolute: float | None  # current - baseline
    relative: float | None  # absolute / |baseline|; None when either is unmeasured or the baseline is 0
    direction: str | None  # BETTER, WORSE, SAME; None when either side is unmeasured
    regression: bool
    reason: str  # why it is (or is not) a regression, in words
    baseline_verdict: str | None
    current_verdict: str | None
    lower_is_better: bool = True
    title: str = ""
    unit: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lower_is_better(row: dict[str, Any]) -> bool:
    """The row's own flag; older summaries lack it, so fall back on the target's comparison sign."""
    if "lower_is_better" in row:
        return bool(row["lower_is_better"])
    return not str(row.get("target", "")).lstrip().startswith(">")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if value == value else None  # NaN means unmeasured


def _rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = summary.get("targets") or []
    return {str(row["metric"]): row for row in rows if isinstance(row, dict) and "metric" in row}


def _rate_scale(base: float, cur: float, unit: str) -> float | None:
    """1 for a rate in [0, 1], 100 for a percentage: the full share the bad share is counted against."""
    if 0.0 <= base <= 1.0 and 0.0 <= cur <= 1.0:
        return 1.0
    if unit == "%" and 0.0 <= base <= 100.0 and 0.0 <= cur <= 100.0:
        return 100.0
    return None


def _judge(base: float, cur: float, lower: bool, unit: str, tolerance: float) -> tuple[str, bool, str]:
    """Direction, regression by size, and the reason."""
    if cur == base:
        return SAME, False, "unchanged"
    direction = WORSE if (cur > base) == lower else BETTER
    if direction == BETTER:
        return direction, False, "better"
    scale = None if lower else _rate_scale(base, cur, unit)
    if scale is not None:
        bad_base, bad_cur, what = scale - base, scale - cur, "bad share"
    else:
        bad_base, bad_cur, what = base, cur, "value"
    if bad_base == 0:
        return direction, True, f"worse: {what} grew from 0"
    growth = abs(bad_cur - bad_base) / abs(bad_base)
    if growth > tolerance:
        return direction, True, f"worse: {what} moved {growth:.0%}, over the {tolerance:.0%} tolerance"
    return direction, False, f"worse within the {tolerance:.0%} tolerance ({what} moved {growth:.0%})"


def _change(metric: str, base_row: dict[str, Any], cur_row: dict[str, Any], tolerance: float) -> Change:
    base, cur = _number(base_row.get("measured")), _number(cur_row.get("measured"))
    lower = lower_is_better(cur_row)
    unit = str(cur_row.get("unit") or base_row.get("unit") or "")
    base_verdict, cur_verdict = base_row.get("verdict"), cur_row.get("verdict")
    if base is None or cur is None:
        direction, regression, reason = None, False, "not measured on both sides"
        absolute = relative = None
    else:
        direction, regression, reason = _judge(base, cur, lower, unit, tolerance)
        absolute = cur - base
        relative = absolute / abs(base) if base != 0 else None
    if base_verdict == PASS and cur_verdict == FAIL:
        # Missing a target the baseline held is a regression even when the move is within the tolerance.
        regression, reason = True, f"verdict went pass -> fail ({reason})"
    return Change(metric, BOTH, base, cur, absolute, relative, direction, regression, reason, base_verdict,
                  cur_verdict, lower, str(cur_row.get("title") or base_row.get("title") or ""), unit)


def _one_side(metric: str, row: dict[str, Any], status: str) -> Change:
    value = _number(row.get("measured"))
    base, cur = (None, value) if status == ADDED else (value, None)
    verdict = row.get("verdict")
    base_verdict, cur_verdict = (None, verdict) if status == ADDED else (verdict, None)
    reason = "only in the current run" if status == ADDED else "only in the baseline"
    return Change(metric, status, base, cur, None, None, None, False, reason, base_verdict, cur_verdict,
                  lower_is_better(row), str(row.get("title") or ""), str(row.get("unit") or ""))


def compare(current: dict[str, Any], baseline: dict[str, Any], *, tolerance: float = 0.10) -> list[Change]:
    """Every target metric of either run, in the current run's order, then the ones only the baseline had."""
    cur_rows, base_rows = _rows(current), _rows(baseline)
    changes = [_change(m, base_rows[m], row, tolerance) if m in base_rows else _one_side(m, row, ADDED)
               for m, row in cur_rows.items()]
    changes += [_one_side(m, row, REMOVED) for m, row in base_rows.items() if m not in cur_rows]
    return changes
