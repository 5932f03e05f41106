"""Journal writes one by one or as one atomic batch: what batching would save, and cost.

Every task costs a replica three journal compare-and-set writes (create, claim, result), each
a JetStream publish whose ack the replica reads. nats-server 2.12+ can store many writes as one
atomic batch (``allow_atomic``, ``Nats-Batch-*`` headers) with a single ack, so a replica could
write a dispatch round's claims, or a stream message's results, in one go. This measures both
ways on a bucket-like stream, ``--writes`` compare-and-sets at a time, as the hub would make them
at 64 tasks in flight:

- `single`: each write its own publish and ack, all in flight at once (the hub's way,
  through ``hub.nats.requests``);
- `atomic`: the same writes as one batch, acked once at its commit.

For each: CPU µs per write in this process (`client`) and in nats-server (`server`), and the
wall time per write. A batch is all or nothing (one stale compare-and-set fails them all), so
the client cost must drop well below the server cost it adds for batching to pay.

    python benchmarks/batched_writes.py --writes 64 --rounds 200 --sync 1s --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import orjson
from nats.js.api import StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuMeter, add_rep_flags
from _hub import emit_reps, run_reps

from hub.nats.requests import Requests
from hub.nats.server import EmbeddedNats

EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--writes", type=int, default=64, help="compare-and-sets made at once")
    p.add_argument("--rounds", type=int, default=200, help="measured rounds of --writes each")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    add_rep_flags(p)
    return p.parse_args(argv)


async def one_rep(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as data:
        server = EmbeddedNats(data, sync=args.sync)
        await server.start()
        nc = await nats.connect(server.url)
        try:
            stream = StreamConfig(
                name="KV_bench", subjects=["$KV.bench.>"], allow_atomic=True, max_msgs_per_subject=1
            )
            await nc.jetstream().add_stream(stream)
            requests, n = Requests(nc), args.writes
            last = [0] * n
            record = orjson.dumps({"id": "t", "status": "running", "pad": "x" * 560})
            batches = iter(range(1 << 62))

            async def single() -> None:
                async def write(i: int) -> None:
                    headers = {EXPECTED_LAST: str(last[i])}
                    last[i] = await requests.publish(
                        f"$KV.bench.task.{i}", record, timeout_s=5, headers=headers
                    )

                await asyncio.gather(*(write(i) for i in range(n)))

            async def atomic() -> None:
                batch = f"b{next(batches)}"
                for i in range(n):
                    headers = {
                        EXPECTED_LAST: str(last[i]),
                        "Nats-Batch-Id": batch,
                        "Nats-Batch-Sequence": str(i + 1),
                    }
                    subject = f"$KV.bench.task.{i}"
                    if i < n - 1:
                        await nc.publish(subject, record, headers=headers)
                        continue
                    headers["Nats-Batch-Commit"] = "1"
                    reply = await requests.request(subject, record, timeout_s=5, headers=headers)
                    answer = orjson.loads(reply.data)
                    if "error" in answer:
                        raise RuntimeError(f"batch refused: {answer['error']}")
                    last[:] = range(answer["seq"] - n + 1, answer["seq"] + 1)

            out: dict[str, float] = {}
            for name, round_ in (("single", single), ("atomic", atomic)):
                out |= await _measure(name, round_, args, server.pid)
            stored = await nc.jetstream().get_last_msg("KV_bench", f"$KV.bench.task.{n - 1}")
            if stored.seq != last[-1]:
                raise RuntimeError(f"revision {last[-1]} noted, {stored.seq} stored")
            return out
        finally:
            await nc.close()
            await server.stop()


async def _measure(
    name: str, round_: Callable[[], Awaitable[None]], args: argparse.Namespace, server: int
) -> dict[str, float]:
    for _ in range(args.warmup):
        await round_()
    meter = CpuMeter({"client": [os.getpid()], "server": [server]})
    meter.start()
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        await round_()
    wall = time.perf_counter() - t0
    cpu, writes = meter.stop(), args.rounds * args.writes
    return {
        f"{name}_client_us": cpu["client"] * 1e6 / writes,
        f"{name}_server_us": cpu["server"] * 1e6 / writes,
        f"{name}_wall_us": wall * 1e6 / writes,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: one_rep(args), digits=1)
    emit_reps(
        "batched_writes", args, {"writes": args.writes, "rounds": args.rounds}, reps, loop, digits=1
    )


if __name__ == "__main__":
    main()
