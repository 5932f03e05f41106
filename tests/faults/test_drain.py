"""A replica's SIGTERM drains: no task waits for a lease to run out (issue 6, "Done when").

Two replica processes (A, B) share one embedded nats-server; node processes run long tasks
through A; the test SIGTERMs A (by the PID it started). Leases are 60 s (``HUB_ACK_WAIT_S``), so
a task that waited for one would finish a minute late: every task here must finish within a
few seconds of its own running time, and A must exit by itself with status 0.

* A node that knows B as well moves there and re-attaches its running tasks: they finish as
  attempt 1, executed once, and the drain cost them no try (``max_attempts=1`` survives).
* A node that knows only A cannot follow: A hands its tasks back at once (after the re-attach
  grace) without counting the try, and a node on B re-runs them as attempt 2.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from procrig import ProcRig, all_terminal, chaos_payload, statuses, until

from hub.nats.server import EmbeddedNats
from hub.v1 import common_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LEASE_S = 60.0
TASK_S = 4.0
#: SIGTERM to every task finished: the tasks' own running time plus slack for a busy machine,
#: far below the lease a timeout would have cost.
WITHIN_S = TASK_S + 12.0


async def _running_on_a(rig: ProcRig, addr: str, ids: list[str]) -> None:
    client = rig.client(addr)

    async def probe() -> bool:
        return all(s == common_pb2.RUNNING for s in (await statuses(client, ids)).values())

    await until(probe, timeout_s=20)


def _replica_id(rig: ProcRig, replica) -> str:
    match = re.search(r"hub replica (\S+) serving", rig.log_text(replica))
    assert match, rig.log_text(replica)
    return match.group(1)


def _assert_clean_exit(rig: ProcRig, replica, began: float) -> None:
    assert replica.process is not None and replica.process.returncode == 0, rig.log_text(replica)
    assert time.monotonic() - began < 10, "the drain is bounded by the re-attach grace"
    assert "Traceback" not in rig.log_text(replica), rig.log_text(replica)


async def test_sigterm_moves_nodes_to_another_replica(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    rig = ProcRig(tmp_path, nats_server.url, HUB_ACK_WAIT_S=str(LEASE_S), HUB_NODE_GRACE_S="3")
    try:
        a, addr_a = await rig.replica("replica-a")
        _, addr_b = await rig.replica("replica-b")
        node = rig.node("node-1", [addr_a, addr_b], slots=3)  # attaches to A first
        await node.start()
        client = rig.client(addr_b)
        ids = ["keep-0", "keep-1", "keep-2"]
        for i, task_id in enumerate(ids):
            await client.submit(
                "chaos", chaos_payload(TASK_S), task_id=task_id, max_attempts=1 if i == 0 else 3
            )
        await _running_on_a(rig, addr_b, ids)

        began = time.monotonic()
        await a.stop(timeout_s=20)
        _assert_clean_exit(rig, a, began)

        tasks = await all_terminal(client, ids, timeout_s=WITHIN_S)
        took = time.monotonic() - began
        assert took < WITHIN_S < LEASE_S
        runs = rig.executions()
        for task_id, task in tasks.items():
            assert task.status == common_pb2.SUCCEEDED, task
            # re-attached through B: the same attempt ran on, once; the drain cost no try
            assert (task.attempt, task.tries, runs[task_id]) == (1, 1, 1), task
            assert [h.outcome for h in task.history] == ["succeeded"], task
        # and the node's presence says it is attached to B now
        (info,) = (await client.nodes()).nodes
        assert (info.node_id, info.replica) == ("node-1", _replica_id(rig, rig.replicas[1]))
    finally:
        await rig.close()


async def test_sigterm_hands_back_what_no_node_took_along(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    rig = ProcRig(tmp_path, nats_server.url, HUB_ACK_WAIT_S=str(LEASE_S), HUB_NODE_GRACE_S="2")
    try:
        a, addr_a = await rig.replica("replica-a")
        _, addr_b = await rig.replica("replica-b")
        stranded = rig.node("node-a-only", [addr_a], slots=2)  # cannot follow A's drain
        await stranded.start()
        client = rig.client(addr_b)
        ids = ["back-0", "back-1"]
        for i, task_id in enumerate(ids):
            await client.submit(
                "chaos", chaos_payload(TASK_S), task_id=task_id, max_attempts=1 if i == 0 else 3
            )
        await _running_on_a(rig, addr_b, ids)
        await rig.node("node-b", [addr_b], slots=2).start()  # free to take what comes back

        began = time.monotonic()
        await a.stop(timeout_s=20)
        _assert_clean_exit(rig, a, began)

        tasks = await all_terminal(client, ids, timeout_s=WITHIN_S)
        assert time.monotonic() - began < WITHIN_S < LEASE_S
        for task in tasks.values():
            assert task.status == common_pb2.SUCCEEDED, task
            # handed back by the drain, not expired: attempt 2 on node-b, the try given back
            assert (task.attempt, task.tries, task.node_id) == (2, 1, "node-b"), task
            first, second = task.history
            assert (first.node_id, first.outcome) == ("node-a-only", "released"), task
            assert "drain" in first.error, task
            assert (second.node_id, second.outcome) == ("node-b", "succeeded"), task
    finally:
        await rig.close()
