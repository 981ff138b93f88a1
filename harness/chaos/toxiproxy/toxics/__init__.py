"""The toxics, one file each, and the registry of them by API ``type`` name.

Adding a toxic is adding one file with a :class:`~harness.chaos.toxiproxy.toxics.base.Toxic` subclass and its
state, naming it in :func:`default_toxics`, and writing its test (``tests/toxiproxy/test_toxic_<type>.py``).
``CONTRACT.md`` beside this file says what every toxic must guarantee.
"""

from __future__ import annotations

from harness.chaos.toxiproxy.toxics.bandwidth import Bandwidth
from harness.chaos.toxiproxy.toxics.base import END, Chunk, End, Item, Toxic, ToxicRegistry, ToxicState
from harness.chaos.toxiproxy.toxics.latency import Latency
from harness.chaos.toxiproxy.toxics.limit_data import LimitData
from harness.chaos.toxiproxy.toxics.noop import Noop
from harness.chaos.toxiproxy.toxics.reset_peer import ResetPeer
from harness.chaos.toxiproxy.toxics.slicer import Slicer
from harness.chaos.toxiproxy.toxics.slow_close import SlowClose
from harness.chaos.toxiproxy.toxics.timeout import Timeout

__all__ = [
    "END",
    "Bandwidth",
    "Chunk",
    "End",
    "Item",
    "Latency",
    "LimitData",
    "Noop",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "ToxicRegistry",
    "ToxicState",
    "default_toxics",
]


def default_toxics() -> dict[str, type[Toxic]]:
    """The TCP toxics of Toxiproxy 2.12 that the embedded server keeps, by type name (a fresh dict each call)."""
    classes: list[type[Toxic]] = [Latency, Bandwidth, SlowClose, Timeout, ResetPeer, Slicer, LimitData, Noop]
    return {cls.type_name: cls for cls in classes}
