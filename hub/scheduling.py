"""Who gets work next: which priority stream to pull from, and which nodes a route's tasks
may go to.

Strict priority alone lets sustained ``critical`` load starve ``low`` for ever. Each priority
keeps a count of dispatches that went to others since it was last served; once a count reaches
the limit, that priority goes first in the next sweep. So under any load, a waiting task of a
lower priority is passed over at most ``limit`` dispatches at a time.

Within a priority, a round looks at routes in one order (the takers' own routes, then the
capability routes, then "any") and gives each task to the eligible taker with the most free
slots. ``Takers`` answers both from an index, so a round costs in proportion to its takers
plus the routes it looks at, not to their product.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from hub.model import Priority, Route

__all__ = ("PriorityScheduler", "Taker", "Takers")


def _holds_none() -> Mapping[Priority, int]:
    return {}


@dataclass(slots=True)
class Taker:
    """A node that can take work now: its id, capabilities and free slots, and what says, per
    priority, how many tasks routed to it by name it holds (their messages are in flight, not
    waiting: fewer is safe, it only costs a pull). Asked only by a rescan, not every round.

    Not frozen, though nothing changes one: a round builds one per attached node, and a frozen
    dataclass's ``__init__`` took 3.7 times as long (2,000 of them, 703 against 187 us)."""

    node: str
    capabilities: frozenset[str] = frozenset()
    free: int = 1
    own: Callable[[], Mapping[Priority, int]] = _holds_none


class Takers:
    """One dispatch round's takers: the routes they can run, in the round's order, and their
    free slots as the round hands tasks out. Pure; no I/O."""

    def __init__(self, takers: Sequence[Taker]) -> None:
        self._takers = list(takers)
        self._place = {t.node: i for i, t in enumerate(self._takers)}
        self.free = {t.node: t.free for t in self._takers if t.free > 0}
        self._left = sum(self.free.values())

    def __bool__(self) -> bool:
        """Whether any taker still has a free slot."""
        return self._left > 0

    def routes(self, capability_sets: Iterable[frozenset[str]]) -> list[Route]:
        """Every route this round may pull, in its order."""
        routes = [Route(node=t.node) for t in self._takers]
        routes += [Route(capabilities=c) for c in sorted(capability_sets, key=sorted)]
        return [*routes, Route()]

    def ordered(
        self, routes: Iterable[Route | None], capability_sets: Iterable[frozenset[str]]
    ) -> list[Route]:
        """Those of ``routes`` that ``self.routes(capability_sets)`` holds, in its order; the
        others (a node not among the takers, an unknown capability set) are left out."""
        caps = set(capability_sets)
        known: list[tuple[tuple[int, int, tuple[str, ...]], Route]] = []
        for route in routes:
            if route is None:
                continue
            if route.node:
                place = self._place.get(route.node)
                if place is not None:
                    known.append(((0, place, ()), route))
            elif route.capabilities:
                if route.capabilities in caps:
                    known.append(((1, 0, tuple(sorted(route.capabilities))), route))
            else:
                known.append(((2, 0, ()), route))
        known.sort(key=lambda pair: pair[0])
        return [route for _, route in known]

    def waiting(self, priority: Priority, held: Mapping[Route, int]) -> set[Route]:
        """The routes of ``held`` (route -> messages its subject holds) that may have a message
        to pull: all but a taker's own route when its messages are no more than the tasks of
        that route the taker holds. So a rescan does not pull every busy node's route."""
        return {
            route
            for route, count in held.items()
            if not route.node
            or (place := self._place.get(route.node)) is None
            or count > self._takers[place].own().get(priority, 0)
        }

    def eligible(self, route: Route) -> list[Taker]:
        """The takers with a free slot that may run ``route``'s tasks: a lookup for a node's
        own route, one pass over the takers for a capability route or "any"."""
        if route.node:
            place = self._place.get(route.node)
            return [self._takers[place]] if place is not None and self.free.get(route.node) else []
        return [
            t
            for t in self._takers
            if self.free.get(t.node, 0) > 0 and route.capabilities <= t.capabilities
        ]

    def give(self, eligible: Sequence[Taker], count: int) -> list[str]:
        """``count`` tasks (at most the eligible takers' free slots), each to the eligible
        taker with the most free slots then (the first among equals): the nodes, in order.
        A batch comes off a heap, so it costs a pass over the takers, not a pass per task."""
        if count == 1:  # (most rounds at low load: one pass, and no heap to build)
            node = max(eligible, key=lambda t: self.free[t.node]).node
            self.free[node] -= 1
            self._left -= 1
            return [node]
        heap = [(-self.free[t.node], i, t.node) for i, t in enumerate(eligible)]
        heapq.heapify(heap)
        nodes = []
        for _ in range(count):
            negative_free, i, node = heapq.heappop(heap)
            self.free[node] -= 1
            self._left -= 1
            nodes.append(node)
            if negative_free < -1:
                heapq.heappush(heap, (negative_free + 1, i, node))
        return nodes


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
