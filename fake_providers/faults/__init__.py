"""Application faults of the fake providers: one file per kind, each a typed config (its fields are its JSON)
implementing :class:`~fake_providers.faults.base.Fault`. The contract is in ``fake_providers/FAULTS.md``.

:data:`FAULT_KINDS` is the registry by name. It is immutable; a gate takes the registry it uses as an argument
(this one by default), so a test or an extension passes its own instead of patching a global. Adding a kind
is adding one file, its entry in :data:`BUILTIN_FAULTS`, and its test.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import Field, ValidationError

from fake_providers.faults.base import Fault, Hit, TriggeredFault
from fake_providers.faults.error import ErrorFault
from fake_providers.faults.garbage import GarbageFault
from fake_providers.faults.rate_limit import RateLimitFault
from fake_providers.faults.slow_first_byte import SlowFirstByteFault
from fake_providers.faults.stall import StallFault
from fake_providers.faults.truncate import TruncateFault
from fake_providers.http import describe_errors

BUILTIN_FAULTS: tuple[type[Fault], ...] = (
    RateLimitFault,
    ErrorFault,
    SlowFirstByteFault,
    StallFault,
    TruncateFault,
    GarbageFault,
)

#: fault kind -> its config model
FAULT_KINDS: Mapping[str, type[Fault]] = MappingProxyType(
    {cls.model_fields["kind"].default: cls for cls in BUILTIN_FAULTS}
)

#: a built-in fault in a config file (``faults:`` of a provider section): validated by its ``kind``
FaultSpec = Annotated[
    RateLimitFault | ErrorFault | SlowFirstByteFault | StallFault | TruncateFault | GarbageFault,
    Field(discriminator="kind"),
]


class FaultError(ValueError):
    """A fault that cannot be used; the message names the field and the reason (a 400 from the control API)."""


def parse_fault(data: Any, kinds: Mapping[str, type[Fault]] = FAULT_KINDS) -> Fault:
    """Validate ``data`` (a JSON object) into the fault its ``kind`` names."""
    if not isinstance(data, dict):
        raise FaultError("(top level): a fault is a JSON object with a 'kind'")
    kind = data.get("kind")
    if kind not in kinds:
        known = ", ".join(kinds)
        what = "missing" if kind is None else f"unknown fault kind {kind!r}"
        raise FaultError(f"kind: {what} (known: {known})")
    try:
        return kinds[kind].model_validate(data)
    except ValidationError as exc:
        raise FaultError(describe_errors(exc)) from exc


__all__ = [
    "BUILTIN_FAULTS",
    "FAULT_KINDS",
    "ErrorFault",
    "Fault",
    "FaultError",
    "FaultSpec",
    "GarbageFault",
    "Hit",
    "RateLimitFault",
    "SlowFirstByteFault",
    "StallFault",
    "TriggeredFault",
    "TruncateFault",
    "parse_fault",
]
