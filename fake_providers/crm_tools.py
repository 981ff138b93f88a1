"""The CRM/calendar fake's canned tools (sans-I/O): plausible, deterministic results for the tool calls a
voice agent makes (look the caller up, check free slots, book).

A result depends only on the tool's arguments (a stable hash, never the process's ``hash()`` or a shared
generator), so every call of a load test gets the same kind of answer whatever the concurrency, and a run is
reproducible. Booking never fails for lack of a slot: a fake that made calls compete for slots would make the
dialog depend on load, which is what the harness measures.

:data:`CANNED_TOOLS` is the registry by name (immutable; the app takes the registry it serves as an argument).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any

#: a tool: its JSON arguments and the call's id -> its JSON result
Tool = Callable[[Mapping[str, Any], str], dict[str, Any]]

_FIRST = ("Jordan", "Alex", "Sam", "Taylor", "Morgan", "Casey", "Riley", "Jamie")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kim", "Murphy")
_SLOTS = ("09:00", "09:30", "10:00", "10:30", "11:00", "13:30", "14:00", "15:00", "15:30", "16:30")
_EPOCH = date(2025, 1, 6)


def _digest(*parts: object) -> int:
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _text(arguments: Mapping[str, Any], *names: str, default: str = "") -> str:
    for name in names:
        value = arguments.get(name)
        if isinstance(value, str | int | float) and str(value).strip():
            return str(value).strip()
    return default


def lookup_customer(arguments: Mapping[str, Any], call_sid: str) -> dict[str, Any]:
    """The caller's CRM record, keyed by phone number (or name, or the call when neither is given)."""
    phone = _text(arguments, "phone", "phone_number", "caller", "from")
    name = _text(arguments, "name", "customer_name")
    h = _digest("customer", phone or name or call_sid)
    full_name = name or f"{_FIRST[h % len(_FIRST)]} {_LAST[(h >> 8) % len(_LAST)]}"
    last_visit = _EPOCH + timedelta(days=(h >> 16) % 300)
    return {
        "found": True,
        "customer": {
            "id": f"cus_{h % 16**10:010x}",
            "name": full_name,
            "phone": phone or f"+1555{h % 10**7:07d}",
            "email": full_name.lower().replace(" ", ".") + "@example.com",
            "last_visit": last_visit.isoformat(),
            "upcoming_appointments": [],
            "notes": ("Prefers mornings.", "Prefers afternoons.", "New patient forms on file.")[h % 3],
        },
    }


def check_calendar(arguments: Mapping[str, Any], call_sid: str) -> dict[str, Any]:
    """Free slots on a day (any wording of the day: "Tuesday", "2026-03-03"), 3 to 5 of them."""
    day = _text(arguments, "day", "date", "when", default="tomorrow")
    service = _text(arguments, "service", "reason", default="appointment")
    h = _digest("calendar", day.lower())
    count = 3 + h % 3
    start = (h >> 4) % (len(_SLOTS) - count + 1)
    return {
        "day": day,
        "service": service,
        "available": True,
        "slots": list(_SLOTS[start : start + count]),
        "duration_minutes": 30,
        "timezone": "America/New_York",
    }


def book_appointment(arguments: Mapping[str, Any], call_sid: str) -> dict[str, Any]:
    """A confirmed booking, with a confirmation code derived from what was booked."""
    day = _text(arguments, "day", "date", "when", default="tomorrow")
    time = _text(arguments, "time", "slot", default=check_calendar({"day": day}, call_sid)["slots"][0])
    name = _text(arguments, "name", "customer_name", default="caller")
    service = _text(arguments, "service", "reason", default="appointment")
    h = _digest("booking", day, time, name, service, call_sid)
    return {
        "booked": True,
        "confirmation": f"APT-{h % 16**6:06X}",
        "day": day,
        "time": time,
        "name": name,
        "service": service,
        "duration_minutes": 30,
    }


#: tool name -> tool, with the names agents commonly give the same three tools
CANNED_TOOLS: Mapping[str, Tool] = MappingProxyType(
    {
        "lookup_customer": lookup_customer,
        "crm_lookup": lookup_customer,
        "lookup_caller": lookup_customer,
        "check_calendar": check_calendar,
        "check_availability": check_calendar,
        "get_available_slots": check_calendar,
        "book_appointment": book_appointment,
    }
)
