"""Which priority stream to pull from next: strict order with an anti-starvation guarantee.

Strict priority alone lets sustained ``critical`` load starve ``low`` for ever. Each priority
keeps a count of dispatches that went to others since it was last served; once a count reaches
the limit, that priority goes first in the next sweep. So under any load, a waiting task of a
lower priority is passed over at most ``limit`` dispatches at a time.
"""

from __future__ import annotations

from hub.model import Priority

__all__ = ("PriorityScheduler",)


class PriorityScheduler:
    """Pure scheduling state for one replica; no I/O."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._passed_over = dict.fromkeys(Priority, 0)

    def order(self) -> list[Priority]:
        """Priorities in the order to sweep them: starving ones first (longest-starved first)."""
        starving = sorted(
            (p for p in Priority if self._passed_over[p] >= self.limit),
            key=lambda p: (-self._passed_over[p], p),
        )
        return starving + [p for p in Priority if p not in starving]

    def served(self, priority: Priority, count: int) -> None:
        """Record ``count`` dispatches from ``priority``; every other priority waited that long."""
        if count <= 0:
            return
        for p in Priority:
            self._passed_over[p] = 0 if p is priority else self._passed_over[p] + count

    def empty(self, priority: Priority) -> None:
        """A priority had nothing to give: it is not waiting, so it is not starving."""
        self._passed_over[priority] = 0

    def passed_over(self, priority: Priority) -> int:
        return self._passed_over[priority]
