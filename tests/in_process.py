"""Settings for a reference runtime started inside the pytest process.

The memory safeguard reads the RSS of the process it runs in (``/proc/self/statm``). Inside pytest that is pytest's
RSS: every earlier test's objects and whatever libraries the session has imported (torch, for the VAD tests, is
several hundred MiB). Against the default 1024 MiB budget the runtime under test would start draining, refusing
calls with ``busy``, for reasons that have nothing to do with it. Tests that are not about memory give it a budget
far above anything pytest reaches; the memory tests set their own budget and inject a process probe.
"""

from __future__ import annotations

from typing import Any

#: the ``memory`` section for an in-process runtime whose test is not about memory
PYTEST_PROCESS_MEMORY: dict[str, Any] = {"budget_mb": 65536}


def with_pytest_memory(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a runtime config's sections) with :data:`PYTEST_PROCESS_MEMORY` unless it sets ``memory``."""
    return data if "memory" in data else {**data, "memory": dict(PYTEST_PROCESS_MEMORY)}
