"""Task kinds for the hub benchmarks, loaded by `hub node --handlers _handlers`.

`spam` writes stdout as fast as it can for a while; `bigout` writes N bytes of stdout and then
keeps running (so a replica holds many running tasks with output at once). Both write a
deterministic byte stream (`stream_bytes`) so the benchmark can check the journal's head and
tail byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import time

from hub.node import TaskContext


def chunk(i: int, size: int) -> bytes:
    """The i-th chunk of a task's output: its number, then filler, `size` bytes in all."""
    head = f"{i:010d}|".encode()
    return (head + b"." * max(size - len(head), 0))[:size]


def stream_bytes(chunks: int, size: int) -> bytes:
    return b"".join(chunk(i, size) for i in range(chunks))


async def spam(ctx: TaskContext) -> str:
    """Payload {"seconds": s, "chunk": n}: append n-byte chunks for s seconds, yielding to the
    loop after each (the node's gRPC stream is the only brake)."""
    spec = json.loads(ctx.payload)
    size, deadline, i = int(spec["chunk"]), time.monotonic() + float(spec["seconds"]), 0
    while time.monotonic() < deadline:
        ctx.stdout(chunk(i, size))
        i += 1
        if i % 16 == 0:
            await asyncio.sleep(0)
    return json.dumps({"chunks": i, "chunk": size})


async def bigout(ctx: TaskContext) -> str:
    """Payload {"bytes": n, "chunk": c, "hold_s": h}: write n bytes in c-byte chunks, then keep
    running for h seconds."""
    spec = json.loads(ctx.payload)
    size = int(spec["chunk"])
    chunks = int(spec["bytes"]) // size
    for i in range(chunks):
        ctx.stdout(chunk(i, size))
        if i % 8 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(float(spec["hold_s"]))
    return json.dumps({"chunks": chunks, "chunk": size})


HANDLERS = {"spam": spam, "bigout": bigout}
