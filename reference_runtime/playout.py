"""What the server believes Twilio still has queued for the caller, sans-I/O (protocol section 4).

Twilio plays the server's audio in real time and echoes a ``mark`` when playout reaches it; ``clear`` empties
the queue and echoes every pending mark at once. So the agent is *speaking* from the first byte sent until the
last mark is echoed (or a ``clear`` is sent). Marks are echoed in the order they were sent: the echo of one
mark means every earlier mark has played too.
"""

from __future__ import annotations

from collections import OrderedDict


class Playout:
    def __init__(self) -> None:
        self._marks: OrderedDict[str, float] = OrderedDict()  # name -> seconds of audio queued before it
        self._unmarked_s = 0.0
        self.sent_s = 0.0

    @property
    def speaking(self) -> bool:
        return bool(self._marks) or self._unmarked_s > 0

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(self._marks)

    @property
    def queued_s(self) -> float:
        """Upper bound of the audio still to play (what was sent and not confirmed by a mark echo)."""
        return sum(self._marks.values()) + self._unmarked_s

    def audio_sent(self, seconds: float) -> None:
        self._unmarked_s += seconds
        self.sent_s += seconds

    def mark_sent(self, name: str) -> None:
        self._marks[name] = self._unmarked_s
        self._unmarked_s = 0.0

    def mark_echoed(self, name: str) -> bool:
        """Returns False for a mark this playout does not know (already cleared, or never sent)."""
        if name not in self._marks:
            return False
        while self._marks:
            played, _ = self._marks.popitem(last=False)
            if played == name:
                break
        return True

    def cleared(self) -> tuple[str, ...]:
        """A ``clear`` was sent: nothing is queued any more. Returns the marks Twilio will echo (and we
        ignore)."""
        dropped = tuple(self._marks)
        self._marks.clear()
        self._unmarked_s = 0.0
        return dropped
