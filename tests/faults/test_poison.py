"""A poison task, one that crashes its node every time, ends in HUB_DLQ (issue 6).

The node process runs a handler module (written to ``tmp_path`` and put on the child's
``PYTHONPATH``) whose kind ``poison`` records the execution and then ``os._exit(1)``s the whole
node: no result, no hand-back, the stream just breaks. The replica hands the task back after
the re-attach grace, counting the try (a node crash is a failed attempt), so after
``HUB_MAX_ATTEMPTS`` crashes the next delivery moves it to the DLQ. The test restarts the node
after each crash, a bounded number of times; leases are long (60 s), so every step is driven by
the broken stream, not a timeout. Normal tasks submitted alongside complete.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from procrig import ProcRig, all_terminal, chaos_payload, until

from hub.nats.server import EmbeddedNats
from hub.v1 import common_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MAX_ATTEMPTS = 3
RESTARTS = MAX_ATTEMPTS + 3  # bound on the loop: a poison task that looped would exhaust it

POISON_MODULE = '''
"""Kind "poison": record the execution, then take the whole node process down."""
import asyncio
import os
from pathlib import Path


async def poison(ctx):
    with (Path(os.environ["CHAOS_DIR"]) / f"exec-{os.getpid()}.log").open("a") as out:
        out.write(f"{ctx.task_id} {ctx.attempt}\\n")
    ctx.stdout(b"about to crash\\n")
    await asyncio.sleep(0.2)
    os._exit(1)


HANDLERS = {"poison": poison}
'''


async def test_poison_task_ends_in_dlq_after_max_attempts(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    modules = tmp_path / "handlers"
    modules.mkdir()
    (modules / "poison_tasks.py").write_text(POISON_MODULE)
    rig = ProcRig(
        tmp_path,
        nats_server.url,
        HUB_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        HUB_ACK_WAIT_S="60",
        HUB_NODE_GRACE_S="1",
        PYTHONPATH=str(modules),
    )
    try:
        _, addr = await rig.replica("replica-1")
        node = rig.node("node-1", [addr], slots=4, handlers=["poison_tasks"])
        await node.start()
        client = rig.client(addr)
        normal = [f"normal-{i}" for i in range(4)]
        await client.submit("poison", b"", task_id="poison-1")
        for task_id in normal:
            # these may be on the node when it crashes: a budget a few crashes cannot use up
            await client.submit("chaos", chaos_payload(0.3), task_id=task_id, max_attempts=20)

        crashes = 0
        began = time.monotonic()
        while (await client.get("poison-1")).status != common_pb2.DEAD:
            assert time.monotonic() - began < 60, f"not in the DLQ after {crashes} crashes"
            assert node.process is not None
            if node.process.returncode is None:
                await asyncio.sleep(0.1)
                continue
            assert node.process.returncode == 1, rig.log_text(node)
            crashes += 1
            assert crashes <= RESTARTS, "the poison task kept coming back"
            await node.start()
        took = time.monotonic() - began
        if node.process is not None and node.process.returncode is not None:
            crashes += 1  # the last crash, seen only after the task was already dead
            await node.start()

        poison = await client.get("poison-1")
        assert poison.status == common_pb2.DEAD, poison
        assert (poison.tries, poison.attempt) == (MAX_ATTEMPTS, MAX_ATTEMPTS), poison
        # each attempt ended because its node was lost, not because its lease ran out
        assert [h.outcome for h in poison.history] == ["released"] * MAX_ATTEMPTS, poison
        assert all("node-1 lost" in h.error for h in poison.history), poison
        assert crashes == MAX_ATTEMPTS
        assert rig.executions()["poison-1"] == MAX_ATTEMPTS
        assert took < 60, "driven by the broken streams, well inside one lease"
        (letter,) = [d for d in (await client.dead()).tasks if d.task_id == "poison-1"]
        assert (letter.kind, len(letter.history)) == ("poison", MAX_ATTEMPTS), letter

        tasks = await all_terminal(client, normal, timeout_s=30)
        assert all(t.status == common_pb2.SUCCEEDED for t in tasks.values()), tasks

        # and it stays dead: the node, restarted once more, is not crashed again
        await asyncio.sleep(3)
        assert node.running, rig.log_text(node)
        assert rig.executions()["poison-1"] == MAX_ATTEMPTS
        counts = await client.pool()
        assert counts.dead == 1 and sum(counts.queued.values()) == 0, counts
        await until(lambda: _idle(client), timeout_s=10)
    finally:
        await rig.close()


async def _idle(client) -> bool:
    counts = await client.pool()
    return counts.in_flight == 0
