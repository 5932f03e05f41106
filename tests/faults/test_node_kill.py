"""A node killed mid-task: its task is finished by another node, as attempt 2 (issue 4).

The victim is a real process (``node_proc.py``) attached to replica A, SIGKILLed by its PID
while it runs a long task; a survivor node attached to replica B then finishes it. The lease
comes back one of two ways, and each is tested on its own:

* ``grace``: A sees the victim's stream break and, the re-attach grace (``node_grace_s``)
  past, hands the task back at once. The lease (``ack_wait_s``) is 60 s here, so a task
  finished within seconds was handed back, not redelivered by JetStream.
* ``ack_wait``: the grace is 60 s, so no hand-back comes in time; nobody heartbeats the task
  any more, its lease (1.5 s) runs out, and JetStream redelivers it.
"""

from __future__ import annotations

import time

import pytest
from grpchub import GrpcHub, addr

from hub.node import TaskContext
from hub.v1 import common_pb2

pytestmark = [pytest.mark.timeout(90)]

CASES = {
    # lease back by: (settings, the history outcome of the victim's attempt)
    "grace": ({"node_grace_s": 0.5, "ack_wait_s": 60.0}, "released"),
    "ack_wait": ({"node_grace_s": 60.0, "ack_wait_s": 1.5}, "lease expired"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_node_killed_mid_task_is_finished_by_another_node(
    fault_hub: GrpcHub, node_processes, case: str
) -> None:
    settings, victim_outcome = CASES[case]
    a, b = await fault_hub.replica(**settings), await fault_hub.replica(**settings)
    victim = await node_processes([addr(a)], "victim")
    client = fault_hub.client(b)
    task_id = (await client.submit("slow", b"60")).task.task_id
    assert await victim.line("started") == ["started", task_id, "1"]
    running = await client.get(task_id)
    assert (running.status, running.node_id, running.attempt) == (common_pb2.RUNNING, "victim", 1)

    runs: list[tuple[str, int]] = []

    async def quick(ctx: TaskContext) -> bytes:
        runs.append((ctx.task_id, ctx.attempt))
        ctx.stdout(f"survivor took over attempt {ctx.attempt}\n")
        return b"survivor finished"

    await fault_hub.node(addr(b), "survivor", {"slow": quick})
    killed_at = time.monotonic()
    await victim.kill()
    assert victim.process.returncode == -9

    response = await client.wait(task_id, 20.0, include_output=True)
    took = time.monotonic() - killed_at
    task = response.task
    assert response.done, task
    assert task.status == common_pb2.SUCCEEDED and task.result == b"survivor finished"
    assert (task.node_id, task.attempt, task.tries) == ("survivor", 2, 2)
    assert runs == [(task_id, 2)]
    assert [(h.attempt, h.node_id, h.outcome) for h in task.history] == [
        (1, "victim", victim_outcome),
        (2, "survivor", "succeeded"),
    ]
    if case == "grace":
        assert "node victim lost" in task.history[0].error
        assert took < 30.0  # well inside the 60 s lease: the hand-back brought it back
    # The output is the new attempt's: a buffer starts over with each attempt.
    assert task.stdout.head == b"survivor took over attempt 2\n"
    assert task.stdout.attempt == 2
    assert await fault_hub.stream_messages(a) == 0
