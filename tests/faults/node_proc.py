"""A node in its own process, for tests that SIGKILL it: ``python node_proc.py ADDRS NODE_ID``.

ADDRS is a comma-separated list of hub addresses. Kind ``slow`` writes a line to the task's
stdout, then sleeps for the payload's seconds (default 60) and returns ``<node> finished``.
The process reports on its own stdout, one line each, flushed: ``connected <replica id>`` once
attached, and ``started <task id> <attempt>`` as a task begins, so the test knows when to kill.
"""

from __future__ import annotations

import asyncio
import sys

from hub.node import Node, TaskContext


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(addrs: list[str], node_id: str) -> None:
    node = Node(addrs, node_id, slots=2, max_backoff_s=0.5)

    @node.handler("slow")
    async def slow(ctx: TaskContext) -> bytes:
        ctx.stdout(f"{node_id} started attempt {ctx.attempt}\n")
        report(f"started {ctx.task_id} {ctx.attempt}")
        await asyncio.sleep(float(ctx.payload or b"60"))
        return f"{node_id} finished".encode()

    runner = asyncio.create_task(node.run())
    await node.connected.wait()
    report(f"connected {node.replica_id}")
    await runner


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), sys.argv[2]))
