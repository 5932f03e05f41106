"""Head+tail output buffers: the first H bytes and the last T bytes of a stream, exactly.

The old hub kept the same shape (the start gives context, the end gives the final status); here
it is a pure value so it can be merged by compare-and-set and property-tested byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hub.model import decode_bytes, encode_bytes

__all__ = ("FOLD_SLACK", "HeadTail", "Unwritten")

#: Bytes of output held raw beyond head+tail before they are folded into a view.
FOLD_SLACK = 16 * 1024


@dataclass(frozen=True, slots=True)
class HeadTail:
    """A bounded view of a byte stream: ``head + <dropped bytes> + tail``.

    Invariants: ``len(head) <= head_max``, ``len(tail) <= tail_max``, and while nothing has
    been dropped the two never overlap, so ``head + tail`` is the whole stream.
    ``attempt`` says which attempt wrote it: output from a new attempt starts a new buffer.
    """

    head: bytes = b""
    tail: bytes = b""
    total: int = 0
    attempt: int = 0

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def append(self, data: bytes, head_max: int, tail_max: int) -> HeadTail:
        if not data:
            return self
        head, rest = self.head, data
        if len(head) < head_max:
            room = head_max - len(head)
            head, rest = head + rest[:room], rest[room:]
        tail = (self.tail + rest)[-tail_max:] if tail_max else b""
        return HeadTail(head=head, tail=tail, total=self.total + len(data), attempt=self.attempt)

    def extend(self, other: HeadTail, head_max: int, tail_max: int) -> HeadTail:
        """Append a stream of which only ``other``, a head+tail view kept with the same limits,
        is held: the result is byte for byte what appending the whole stream would give (the
        bytes ``other`` dropped could only ever have been dropped here too)."""
        if not other.dropped:
            return self.append(other.head + other.tail, head_max, tail_max)
        head = self.append(other.head, head_max, tail_max).head
        return HeadTail(head, other.tail, self.total + other.total, self.attempt)

    def since(self, offset: int) -> tuple[bytes, int]:
        """Bytes from stream ``offset`` on that are still held, and how many were skipped.

        Lets a watcher resume: it gets what it has not seen, and is told of any gap.
        """
        offset = max(0, min(offset, self.total))
        out, skipped = b"", 0
        if offset < len(self.head):
            out = self.head[offset:]
            offset = len(self.head)
        tail_start = self.total - len(self.tail)
        if offset < tail_start:
            skipped = tail_start - offset
            offset = tail_start
        return out + self.tail[offset - tail_start :], skipped

    def to_json(self) -> bytes:
        data = {
            "head": encode_bytes(self.head),
            "tail": encode_bytes(self.tail),
            "total_bytes": self.total,
            "dropped_bytes": self.dropped,
            "attempt": self.attempt,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> HeadTail:
        data = json.loads(raw)
        return cls(
            head=decode_bytes(data["head"]),
            tail=decode_bytes(data["tail"]),
            total=data["total_bytes"],
            attempt=data.get("attempt", 0),
        )


@dataclass(slots=True)
class Unwritten:
    """Output accepted but not yet passed on (by a replica to the journal, by a node to its
    replica): raw bytes, folded into a head+tail view whenever they pass what a buffer keeps
    by ``slack``, so whoever lags behind a fast writer holds a bounded amount, not everything
    written since it last caught up. The view is exact: ``HeadTail.extend`` by it gives what
    appending every byte would."""

    attempt: int
    data: bytearray = field(default_factory=bytearray)
    folded: HeadTail | None = None

    def __bool__(self) -> bool:
        return bool(self.data or self.folded)

    def add(self, data: bytes, head_max: int, tail_max: int, slack: int = FOLD_SLACK) -> None:
        self.data += data
        if len(self.data) > head_max + tail_max + slack:
            self.folded = self.view(head_max, tail_max)
            self.data = bytearray()

    def add_view(self, view: HeadTail, head_max: int, tail_max: int) -> None:
        """Add a stretch of the stream of which only a head+tail view (same limits) is held."""
        self.folded = self.view(head_max, tail_max).extend(view, head_max, tail_max)
        self.data = bytearray()

    def view(self, head_max: int, tail_max: int) -> HeadTail:
        view = self.folded or HeadTail(attempt=self.attempt)
        return view.append(bytes(self.data), head_max, tail_max)
