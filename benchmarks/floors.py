"""Floors: the cheapest serial step each layer of the hub's path allows on this machine.

The K=1 latency goal is a sum of serial steps (gRPC hops and NATS round trips), so what one
step costs with nothing else running bounds what any design built from those steps can reach.
This measures, one at a time and nothing else in flight:

- `js_publish`: a JetStream publish and its ack, the hub's own request path (`hub.nats.requests`),
  which is also what a journal compare-and-set costs;
- `js_pull`: a no-wait pull of one stored message and its confirmed ack;
- `grpc_rtt`: a unary gRPC call to a hub replica process (its health check) and back: two hops;
- `grpc_stream_rtt`: one message each way on a bidirectional stream already open to the
  replica (reflection's `list_services`), as the hub's SubmitStream and node streams carry them.

For each: p50 and p99 in µs, and the Python CPU per operation (this process for NATS; this
process and the replica's for gRPC), so that CPU bounds can be read too.

    python benchmarks/floors.py --ops 2000 --sync 1s --reps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: F401  (first: it sets the gRPC variables gRPC reads on import)
import grpc
import nats
from _common import CpuMeter, add_rep_flags, percentile
from _hub import HubRig, emit_reps, run_reps
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hub.config import Settings
from hub.model import Priority, Route
from hub.nats.requests import Requests
from hub.nats.subjects import task_subject
from hub.nats.topology import Topology
from hub.queue import _Puller


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ops", type=int, default=2000, help="operations measured per step kind")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured operations first")
    add_rep_flags(p)
    return p.parse_args(argv)


async def _time(
    name: str, op: Callable[[int], Awaitable[object]], ops: int, warmup: int, pids: list[int]
) -> dict[str, float]:
    for i in range(warmup):
        await op(i)
    meter = CpuMeter({"python": [os.getpid(), *pids]})
    meter.start()
    took = []
    for i in range(ops):
        t0 = time.perf_counter()
        await op(warmup + i)
        took.append((time.perf_counter() - t0) * 1e6)
    cpu = meter.stop()["python"]
    return {
        f"{name}_p50_us": percentile(took, 50),
        f"{name}_p99_us": percentile(took, 99),
        f"{name}_cpu_us": cpu * 1e6 / ops,
    }


async def one_rep(args: argparse.Namespace) -> dict[str, float]:
    rig = HubRig(replicas=1, nodes=0, sync=args.sync, start_nodes=False, loop=args.loop)
    await rig.start()
    nc = await nats.connect(rig.nats.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FLOORS", subjects=["floors.>"])
        requests, total = Requests(nc), args.ops + args.warmup
        payload = b"x" * 256
        out = await _time(
            "js_publish",
            lambda i: requests.publish("floors.t", payload, timeout_s=5),
            args.ops,
            args.warmup,
            [],
        )
        # The replica has made the task streams; it has no node, so it pulls nothing itself.
        name = await Topology(js, Settings()).ensure_consumer(Priority.LOW, Route())
        for _ in range(total):
            await requests.publish(task_subject(Priority.LOW, Route()), payload, timeout_s=5)
        puller = _Puller(nc, name)

        async def pull(_: int) -> None:
            (msg,) = await puller.pull(1, 5.0)
            await requests.request(msg.reply, b"+ACK", timeout_s=5)

        out |= await _time("js_pull", pull, args.ops, args.warmup, [])
        async with grpc.aio.insecure_channel(rig.addrs[0]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            out |= await _time(
                "grpc_rtt",
                lambda i: health.Check(request, timeout=5),
                args.ops,
                args.warmup,
                rig.replica_pids,
            )
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
            ask = reflection_pb2.ServerReflectionRequest(list_services="")

            async def exchange(_: int) -> None:
                await stream.write(ask)
                await stream.read()

            out |= await _time("grpc_stream_rtt", exchange, args.ops, args.warmup, rig.replica_pids)
            await stream.done_writing()
        return out
    finally:
        await nc.close()
        await rig.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: one_rep(args), digits=1)
    emit_reps("floors", args, {"ops": args.ops}, reps, loop, digits=1)


if __name__ == "__main__":
    main()
