"""PriorityScheduler: strict order by default, bounded waiting for every priority under load."""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.model import Priority, Route
from hub.scheduling import PriorityScheduler, Taker, Takers

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


# -- Takers: a round's routes and eligibility, from an index ----------------------------------

NODES = [f"n{i}" for i in range(6)]
CAPS = ["gpu", "cpu", "big"]
capability_sets = st.frozensets(st.sampled_from(CAPS), min_size=1)
takers_st = st.lists(
    st.builds(
        Taker,
        node=st.sampled_from(NODES),
        capabilities=st.frozensets(st.sampled_from(CAPS)),
        free=st.integers(0, 3),
    ),
    unique_by=lambda t: t.node,
)
routes_st = st.one_of(
    st.just(Route()),
    st.builds(Route, node=st.sampled_from([*NODES, "elsewhere"])),
    st.builds(Route, capabilities=capability_sets),
)


def brute_eligible(takers: list[Taker], free: dict[str, int], route: Route) -> list[Taker]:
    """Every taker checked against the route: what a round did before the index."""
    return [
        t for t in takers if free.get(t.node, 0) > 0 and route.can_run_on(t.node, t.capabilities)
    ]


@settings(max_examples=300, deadline=None)
@given(
    takers=takers_st,
    caps=st.sets(capability_sets, max_size=4),
    wanted=st.sets(st.one_of(st.none(), routes_st), max_size=8),
    gives=st.lists(st.tuples(routes_st, st.integers(0, 12)), max_size=12),
)
def test_takers_answer_as_a_check_of_every_taker_would(
    takers: list[Taker],
    caps: set[frozenset[str]],
    wanted: set[Route | None],
    gives: list[tuple[Route, int]],
) -> None:
    index = Takers(takers)
    every = index.routes(caps)
    assert every[-1] == Route() and len(every) == len(set(every)) == len(takers) + len(caps) + 1
    assert index.ordered(wanted, caps) == [r for r in every if r in wanted]
    free = {t.node: t.free for t in takers if t.free > 0}
    for route, wanted_tasks in gives:  # as a round hands tasks out, the index follows
        eligible = index.eligible(route)
        assert eligible == brute_eligible(takers, free, route)
        assert bool(index) == any(free.values())
        count = min(wanted_tasks, sum(free[t.node] for t in eligible))
        expected = []
        for _ in range(count):  # each task to the most free slots, the first among equals
            node = max(eligible, key=lambda t: free[t.node]).node
            free[node] -= 1
            expected.append(node)
        assert index.give(eligible, count) == expected
        assert index.free == free


@settings(max_examples=300, deadline=None)
@given(
    takers=takers_st,
    held=st.dictionaries(routes_st, st.integers(1, 4), max_size=8),
    own=st.dictionaries(st.sampled_from(NODES), st.integers(0, 4)),
    priority=st.sampled_from(P),
)
def test_a_route_waits_unless_its_node_holds_every_message_in_it(
    takers: list[Taker], held: dict[Route, int], own: dict[str, int], priority: Priority
) -> None:
    takers = [replace(t, own=lambda n=t.node: {priority: own.get(n, 0)}) for t in takers]
    by_node = {t.node: t for t in takers}
    waiting = Takers(takers).waiting(priority, held)
    assert waiting <= set(held)
    for route, count in held.items():
        taker = by_node.get(route.node)
        holds_all = taker is not None and count <= taker.own()[priority]
        assert (route in waiting) is not holds_all
    other = next(p for p in P if p is not priority)  # what a node holds on another priority
    assert Takers(takers).waiting(other, held) == set(held)  # does not count on this one
