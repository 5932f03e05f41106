"""PriorityScheduler: strict order by default, bounded waiting for every priority under load."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.model import Priority
from hub.scheduling import PriorityScheduler

P = list(Priority)


def dispatch_one(scheduler: PriorityScheduler, queues: dict[Priority, deque[int]]) -> Priority:
    """One dispatch for one free slot, exactly as Pool.fetch sweeps: in the scheduler's order,
    an empty priority is marked empty, the first non-empty one is served."""
    for priority in scheduler.order():
        if queues[priority]:
            queues[priority].popleft()
            scheduler.served(priority, 1)
            return priority
        scheduler.empty(priority)
    raise AssertionError("nothing to dispatch")


def test_strict_order_while_nobody_starves() -> None:
    scheduler = PriorityScheduler(limit=100)
    queues = {p: deque(range(3)) for p in reversed(P)}
    order = [dispatch_one(scheduler, queues) for _ in range(12)]
    assert order == [p for p in P for _ in range(3)]


def test_low_is_served_within_the_limit_under_sustained_critical_load() -> None:
    limit = 4
    scheduler = PriorityScheduler(limit=limit)
    queues = {p: deque() for p in P}
    queues[Priority.LOW].append(0)
    served = []
    for _ in range(limit + 1):
        queues[Priority.CRITICAL].append(0)  # critical never runs dry
        served.append(dispatch_one(scheduler, queues))
    assert served == [Priority.CRITICAL] * limit + [Priority.LOW]


def test_order_puts_longest_starved_first() -> None:
    scheduler = PriorityScheduler(limit=2)
    scheduler.served(Priority.CRITICAL, 3)  # everyone else passed over 3 times
    assert scheduler.order() == [Priority.HIGH, Priority.NORMAL, Priority.LOW, Priority.CRITICAL]
    scheduler.served(Priority.HIGH, 1)
    assert scheduler.order()[0] is Priority.NORMAL
    assert scheduler.passed_over(Priority.NORMAL) == 4 and scheduler.passed_over(Priority.HIGH) == 0
    scheduler.empty(Priority.NORMAL)
    assert scheduler.passed_over(Priority.NORMAL) == 0
    scheduler.served(Priority.LOW, 0)  # nothing served changes nothing
    assert scheduler.passed_over(Priority.LOW) == 4


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityScheduler(0)


@settings(max_examples=200)
@given(
    limit=st.integers(min_value=1, max_value=10),
    arrivals=st.lists(st.lists(st.sampled_from(P), max_size=4), min_size=1, max_size=120),
)
def test_no_priority_waits_more_than_limit_plus_three_dispatches(
    limit: int, arrivals: list[list[Priority]]
) -> None:
    """Whatever arrives, a non-empty priority is served within limit + 3 dispatches (at most
    the three others can be ahead of it once it starves)."""
    scheduler = PriorityScheduler(limit)
    queues: dict[Priority, deque[int]] = {p: deque() for p in P}
    waited = dict.fromkeys(P, 0)
    for batch in arrivals:
        for p in batch:
            queues[p].append(0)
        if not any(queues.values()):
            continue
        waiting = [p for p in P if queues[p]]
        served = dispatch_one(scheduler, queues)
        for p in waiting:
            waited[p] = 0 if p is served else waited[p] + 1
            assert waited[p] <= limit + 3, (p, waited, limit)
        for p in P:
            if not queues[p]:
                waited[p] = 0
