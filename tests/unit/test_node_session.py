"""NodeSession: what a node holds of the tasks routed to it, which a rescan subtracts."""

from __future__ import annotations

from hub.model import Priority, Route
from hub.nodes import NodeSession
from hub.queue import Delivery


def delivery(task_id: str, route: Route, priority: Priority = Priority.NORMAL) -> Delivery:
    return Delivery(task_id, "echo", 1, priority, route, b"", f"$JS.ACK.{task_id}", 1, 1)


def test_own_counts_the_held_and_offered_tasks_routed_to_the_node_by_priority() -> None:
    session = NodeSession("n1", frozenset(), slots=8, send=lambda _: None)
    assert session.own() == {}
    session.granted(delivery("a", Route(node="n1")), attempt=1)
    session.granted(delivery("b", Route(node="n1"), Priority.HIGH), attempt=1)
    session.granted(delivery("c", Route()), attempt=1)  # "any": in flight anywhere, not counted
    session.offered["d"] = delivery("d", Route(node="n1"))
    session.offered["e"] = delivery("e", Route(capabilities=frozenset({"gpu"})))
    assert session.own() == {Priority.NORMAL: 2, Priority.HIGH: 1}
    assert set(session.held) == {"a", "b", "c"}
    session.held.pop("a")  # finished, cancelled or stopped: no longer counted, and forgotten
    session.offered.pop("d")
    assert session.own() == {Priority.HIGH: 1}
    assert set(session.pinned) == {"b"}
