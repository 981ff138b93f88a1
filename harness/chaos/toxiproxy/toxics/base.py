"""The one interface every toxic implements; the contract it keeps is written down in ``CONTRACT.md`` beside this file.

A toxic has two halves, mirroring Toxiproxy's ``toxics/toxic.go``:

- :class:`Toxic` is the configuration. Its dataclass fields ARE the JSON ``attributes`` of the API (``latency``,
  ``jitter``, ...), with the type's defaults; it is immutable, and an update makes a new one.
- :class:`ToxicState` is what one toxic does to one direction of one connection. It is sans-I/O: it is pushed
  items (:class:`Chunk` or :data:`END`) with the time they arrive, and pulled the items that are due at a given
  time. It never sleeps and never touches a socket; the adapter (``harness.chaos.toxiproxy.link``) asks for
  :meth:`ToxicState.deadline` and wakes it then. So every "blocking" operation is interruptible by construction:
  interrupting is just calling :meth:`ToxicState.flush` or :meth:`ToxicState.removed` instead of waiting.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from random import Random
from typing import Any, ClassVar, Self


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from a socket, with the time they were read (or released by a delaying toxic before this one)."""

    data: bytes
    at: float


class End:
    """The end of a direction: the source closed, or a toxic closed the connection. Nothing follows it."""

    _instance: ClassVar[End | None] = None

    def __new__(cls) -> End:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END = End()
Item = Chunk | End


class BadAttribute(ValueError):
    """An ``attributes`` value of the wrong JSON type; the API answers 400 ``bad request body: <message>``."""


@dataclass(frozen=True)
class Toxic(ABC):
    """A toxic's configuration. Subclasses are frozen dataclasses whose fields are the JSON attributes."""

    type_name: ClassVar[str]
    # True when a toxic of this type, present when a connection is accepted, makes every close of that connection an
    # RST (Toxiproxy's link.go sets SO_LINGER 0 on both sockets for reset_peer). Added later: ordinary closes.
    rst_on_close: ClassVar[bool] = False

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any] | None, base: Self | None = None) -> Self:
        """Build from JSON ``attributes`` over ``base`` (defaults when None); unknown keys are ignored (as Go does).

        Keys match case-insensitively, an exact match first: that is how Go's ``encoding/json`` decodes them.
        """
        current = base if base is not None else cls()
        if attributes is None:
            return current
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            found, value = _lookup(attributes, field.name)
            if not found or value is None:
                continue
            changes[field.name] = _coerce(cls, field.name, field.type, value)
        return dataclasses.replace(current, **changes)

    def attributes(self) -> dict[str, Any]:
        """The JSON ``attributes`` object, in field order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @abstractmethod
    def start(self, now: float, rng: Random) -> ToxicState:
        """The state for one connection and direction, started at ``now`` (accept time, or when added or updated)."""


def _lookup(attributes: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    if name in attributes:
        return True, attributes[name]
    for key, value in attributes.items():
        if isinstance(key, str) and key.lower() == name:
            return True, value
    return False, None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _coerce(cls: type[Toxic], name: str, annotation: Any, value: Any) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    where = f"Go struct field {cls.__name__}Toxic.attributes.{name}"
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BadAttribute(f"json: cannot unmarshal {_json_kind(value)} into {where} of type int64")
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise BadAttribute(f"json: cannot unmarshal {_json_kind(value)} into {where} of type float64")
    raise TypeError(f"{cls.__name__}.{name}: unsupported attribute type {kind}")  # a programming error, not input


class ToxicState(ABC):
    """One toxic acting on one direction of one connection. Sans-I/O: time is passed in, nothing blocks."""

    @abstractmethod
    def receive(self, item: Item, now: float) -> None:
        """Take an item from the previous stage (or the socket) at ``now``."""

    @abstractmethod
    def pull(self, now: float) -> list[Item]:
        """The items due by ``now``, in order. After :data:`END` nothing more is pulled."""

    def deadline(self) -> float | None:
        """When :meth:`pull` next has something to give (None: not until more is received)."""
        return None

    def held_bytes(self) -> int:
        """Bytes held back; the adapter stops reading the source while a chain holds too much."""
        return 0

    def flush(self) -> list[Item]:
        """Interrupt: everything held, at once and in order (used when the toxic is updated or removed)."""
        return []

    def removed(self) -> list[Item]:
        """The toxic was removed: what to hand on. By default what it held (a latency toxic delivers its data at once);
        a toxic whose removal closes the connection appends :data:`END`."""
        return self.flush()

    def carry_from(self, old: ToxicState) -> None:  # noqa: B027 - optional hook, empty by default
        """The toxic was updated and this state replaces ``old``: copy what must persist (limit_data's byte count)."""


class PassThrough(ToxicState):
    """Hands every item on as soon as it arrives: ``noop``, and any toxic that was not drawn (toxicity)."""

    def __init__(self) -> None:
        self._out: list[Item] = []

    def receive(self, item: Item, now: float) -> None:
        self._out.append(item)

    def pull(self, now: float) -> list[Item]:
        out, self._out = self._out, []
        return out

    def held_bytes(self) -> int:
        return sum(len(item.data) for item in self._out if isinstance(item, Chunk))

    def flush(self) -> list[Item]:
        return self.pull(0.0)


class Scheduled(ToxicState):
    """A FIFO of items, each released at its own time; an item never overtakes the one before it.

    Subclasses decide the release times in :meth:`schedule`. A release time of ``math.inf`` holds an item until the
    toxic is updated, removed or the connection closes (bandwidth with ``rate: 0``).
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[float, Item]] = deque()
        self._held = 0

    @abstractmethod
    def schedule(self, item: Item, now: float) -> None:
        """Append ``item`` (or the pieces it is cut into) with :meth:`hold`."""

    def hold(self, item: Item, release_at: float) -> None:
        self._queue.append((release_at, item))
        if isinstance(item, Chunk):
            self._held += len(item.data)

    def released(self, item: Item, at: float, now: float) -> Item:
        """Hook: the item as it leaves (latency stamps the release time on it)."""
        return item

    def receive(self, item: Item, now: float) -> None:
        self.schedule(item, now)

    def pull(self, now: float) -> list[Item]:
        out: list[Item] = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            at, item = queue.popleft()
            if isinstance(item, Chunk):
                self._held -= len(item.data)
            out.append(self.released(item, at, now))
        return out

    def deadline(self) -> float | None:
        if not self._queue:
            return None
        at = self._queue[0][0]
        return None if at == math.inf else at

    def held_bytes(self) -> int:
        return self._held

    def flush(self) -> list[Item]:
        out = [item for _, item in self._queue]
        self._queue.clear()
        self._held = 0
        return out


ToxicRegistry = Mapping[str, type[Toxic]]
"""Toxic classes by their API ``type`` name; built explicitly (:func:`harness.chaos.toxiproxy.toxics.default_toxics`)
and passed to the server, never a global."""
