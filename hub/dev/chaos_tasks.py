"""The task kind the chaos run uses: deterministic output, and a record of every execution.

Each execution appends ``<task id> <attempt>`` to a per-process file under ``$CHAOS_DIR``
before it starts, so the chaos check can count executions per task, including those cut short
by a SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from hub.node import Handler, TaskContext

__all__ = ("HANDLERS", "expected_output")


def expected_output(task_id: str, lines: int) -> bytes:
    """The exact stdout of a chaos task (so the journal can be checked byte for byte)."""
    return b"".join(f"{task_id} line {i:05d} {'x' * (i % 50)}\n".encode() for i in range(lines))


async def chaos(ctx: TaskContext) -> str:
    spec = ctx.json()
    log = Path(os.environ["CHAOS_DIR"]) / f"exec-{os.getpid()}.log"
    with log.open("a") as out:
        out.write(f"{ctx.task_id} {ctx.attempt}\n")
    lines, seconds = int(spec["lines"]), float(spec["seconds"])
    output = expected_output(ctx.task_id, lines)
    steps = max(1, min(lines, 20))
    for i in range(steps):
        ctx.stdout(output[len(output) * i // steps : len(output) * (i + 1) // steps])
        await asyncio.sleep(seconds / steps)
    return json.dumps({"task_id": ctx.task_id, "bytes": len(output)})


HANDLERS: dict[str, Handler] = {"chaos": chaos}
