"""A direction's chain of toxic states, sans-I/O: push items in, advance time, take items out.

Toxiproxy (``link.go``) runs one goroutine per toxic joined by channels; here the chain is a list of
:class:`~harness.chaos.toxiproxy.toxics.base.ToxicState` advanced in one pass, so an item can cross every
pass-through stage in the same call and the adapter needs one timer per direction, not one task per toxic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.chaos.toxiproxy.toxics.base import END, Item, ToxicState


@dataclass(slots=True)
class Stage:
    """One toxic in one chain: its name (to find it on update and removal) and its current state."""

    name: str
    state: ToxicState
    ended: bool = False  # it has passed END: what still reaches it is dropped

    def receive(self, item: Item, now: float) -> None:
        if not self.ended:
            self.state.receive(item, now)

    def pull(self, now: float) -> list[Item]:
        if self.ended:
            return []
        out = self.state.pull(now)
        if out and out[-1] is END:
            self.ended = True
        return out


@dataclass(slots=True)
class ToxicChain:
    """The stages of one direction of one connection, in the order the toxics were added."""

    stages: list[Stage] = field(default_factory=list)
    _out: list[Item] = field(default_factory=list)  # items already past the last stage, not yet taken

    def __bool__(self) -> bool:
        return bool(self.stages) or bool(self._out)

    def feed(self, item: Item, now: float) -> None:
        if self.stages:
            self.stages[0].receive(item, now)
        else:
            self._out.append(item)

    def advance(self, now: float) -> list[Item]:
        """Everything due by ``now`` that leaves the last stage, in order."""
        carry: list[Item] = []
        for stage in self.stages:
            for item in carry:
                stage.receive(item, now)
            carry = stage.pull(now)
        if self._out:
            carry = [*self._out, *carry]
            self._out = []
        return carry

    def deadline(self) -> float | None:
        """The earliest time a stage has something due (None: nothing until more is fed)."""
        if self._out:
            return float("-inf")
        soonest: float | None = None
        for stage in self.stages:
            if stage.ended:
                continue
            at = stage.state.deadline()
            if at is not None and (soonest is None or at < soonest):
                soonest = at
        return soonest

    def held_bytes(self) -> int:
        return sum(stage.state.held_bytes() for stage in self.stages)

    def add(self, name: str, state: ToxicState) -> None:
        self.stages.append(Stage(name, state))

    def index(self, name: str) -> int | None:
        for i, stage in enumerate(self.stages):
            if stage.name == name:
                return i
        return None

    def replace(self, name: str, state: ToxicState, now: float) -> None:
        """The toxic was updated: interrupt the old state and hand what it held to the new one."""
        i = self.index(name)
        if i is None:
            return
        stage = self.stages[i]
        old = stage.state
        held = old.flush()
        state.carry_from(old)
        stage.state = state
        if not stage.ended:
            for item in held:
                state.receive(item, now)

    def remove(self, name: str, now: float) -> None:
        """The toxic was removed: what it held (and END, for a toxic whose removal closes) goes to the next stage."""
        i = self.index(name)
        if i is None:
            return
        stage = self.stages.pop(i)
        handed_on = [] if stage.ended else stage.state.removed()
        if i < len(self.stages):
            for item in handed_on:
                self.stages[i].receive(item, now)
        else:
            self._out.extend(handed_on)
