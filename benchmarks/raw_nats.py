"""The ceiling: the hub's task round trip in plain nats-py, with no hub code in the way.

A producer publishes tasks (with `Nats-Msg-Id`) to a file-stored work-queue stream and keeps K
in flight; worker *processes* pull from one shared durable consumer in batches, put each
result in a KV bucket (`res.<id>`) and then ack; the producer sees every result through ONE
subscription on the bucket's republish subject (not one watcher per task) and measures
submit-to-result latency. Whatever the hub adds on top of this path shows as the gap to here.

    python benchmarks/raw_nats.py --tasks 5000 --inflight 64 --sync 1s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402 - the scripts run as files, not as a package
    SYNC_MODES,
    CpuMeter,
    RepResult,
    emit_json,
    nats_server_version,
    note,
    progress,
    run_async,
    spawn,
    start_nats,
    stop_pid,
    summarize,
)

STREAM = "BENCH_TASKS"
CONSUMER = "workers"
BUCKET = "bench_results"
TASK_PREFIX = "bench.tasks."
DONE_PREFIX = "bench.done.res."  # the bucket republishes $KV.bench_results.res.<id> here
READY_SUBJECT = "bench.ready"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags shared with the other peer benchmarks, plus the hidden worker mode."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=2000, help="measured tasks per rep")
    p.add_argument("--inflight", type=int, default=64, help="tasks kept in flight by the producer")
    p.add_argument("--sync", choices=SYNC_MODES, default="always", help="nats-server sync_interval")
    p.add_argument("--reps", type=int, default=3, help="repetitions (fresh server each)")
    p.add_argument("--payload-bytes", type=int, default=256, help="task payload size")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--batch", type=int, default=64, help="max messages per worker fetch")
    p.add_argument("--ack", choices=("ack", "ack_sync"), default="ack", help="how workers ack")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured tasks before each rep")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on one rep, seconds")
    p.add_argument("--worker-url", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- worker process --------------------------------------------------------------------------


async def worker_main(url: str, batch: int, ack: str) -> None:
    """Fetch batches from the shared durable; per message: KV put of the result, then ack.

    A batch's puts run concurrently (one awaited round trip per batch rather than per task);
    the ack follows its own put so that an acked task always has its result stored.
    """
    nc = await nats.connect(url, name="bench-worker")
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    kv = await js.key_value(BUCKET)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(m: Msg) -> None:
        await kv.put("res." + m.subject[len(TASK_PREFIX) :], m.data)
        if ack == "ack_sync":
            await m.ack_sync()
        else:
            await m.ack()

    await nc.publish(READY_SUBJECT, b"")
    await nc.flush()
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        await asyncio.gather(*(handle(m) for m in msgs))
    await nc.drain()


# --- producer --------------------------------------------------------------------------------


async def setup(js: JetStreamContext, inflight: int) -> None:
    """The work-queue stream, its shared durable consumer, and the result bucket."""
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[TASK_PREFIX + ">"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=-1,
        ),
    )
    await js.create_key_value(
        KeyValueConfig(
            bucket=BUCKET,
            history=1,
            storage=StorageType.FILE,
            republish=RePublish(src=f"$KV.{BUCKET}.>", dest="bench.done.>"),
        )
    )


class Producer:
    """Submits tasks with K in flight and matches results from one republish subscription."""

    def __init__(self, nc: Client, js: JetStreamContext, payload: bytes) -> None:
        self.nc, self.js, self.payload = nc, js, payload
        self.waiting: dict[str, asyncio.Future[float]] = {}

    async def on_result(self, msg: Msg) -> None:
        """One callback for every result: resolve the waiting submitter with the arrival time."""
        fut = self.waiting.pop(msg.subject[len(DONE_PREFIX) :], None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())

    async def run(self, prefix: str, n: int, inflight: int, bar: Any = None) -> list[float]:
        """Run n tasks with `inflight` concurrent submitters; return submit-to-result latencies."""
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        next_i = 0

        async def submitter() -> None:
            nonlocal next_i
            while next_i < n:
                task_id = f"{prefix}{next_i}"
                next_i += 1
                fut: asyncio.Future[float] = loop.create_future()
                self.waiting[task_id] = fut
                t0 = time.perf_counter()
                await self.js.publish(
                    TASK_PREFIX + task_id, self.payload, headers={"Nats-Msg-Id": task_id}
                )
                latencies.append(await fut - t0)
                if bar is not None:
                    bar.advance()

        await asyncio.gather(*(submitter() for _ in range(min(inflight, n))))
        return latencies


async def run_rep(args: argparse.Namespace, rep: int) -> RepResult:
    """One rep on a fresh nats-server: setup, start workers, warm up, measure, clean up."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-raw-nats-"))
    worker_pids: list[int] = []
    url, server_pid, stop_server = start_nats(args.sync, tmp)
    try:
        nc = await nats.connect(url, name="bench-producer")
        js = nc.jetstream()
        await setup(js, args.inflight)
        producer = Producer(nc, js, b"x" * args.payload_bytes)
        await nc.subscribe(DONE_PREFIX + ">", cb=producer.on_result)
        ready: asyncio.Queue[Msg] = asyncio.Queue()
        await nc.subscribe(READY_SUBJECT, cb=ready.put)
        await nc.flush()
        await nc.flush()  # two flushes: a single one can overtake the SUB (notes §11)
        for _ in range(args.workers):
            worker_pids.append(
                spawn(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--worker-url",
                        url,
                        "--batch",
                        str(args.batch),
                        "--ack",
                        args.ack,
                    ]
                )
            )
        for _ in range(args.workers):
            await asyncio.wait_for(ready.get(), timeout=30)
        if args.warmup:
            await producer.run("w", args.warmup, args.inflight)
        meter = CpuMeter(
            {"producer": [os.getpid()], "workers": worker_pids, "nats_server": [server_pid]},
            with_children=False,
        )
        meter.start()
        t0 = time.perf_counter()
        with progress(args.tasks, f"raw_nats rep {rep + 1}/{args.reps}") as bar:
            lat = await asyncio.wait_for(
                producer.run("t", args.tasks, args.inflight, bar), timeout=args.timeout
            )
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        await nc.close()
        return RepResult(args.tasks, elapsed, lat, cpu)
    finally:
        for pid in worker_pids:
            stop_pid(pid)
        stop_server()
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> list[RepResult]:
    """All reps in sequence."""
    reps = []
    for rep in range(args.reps):
        r = await run_rep(args, rep)
        f = r.figures()
        note(
            f"rep {rep + 1}: {f['tasks_per_s']} tasks/s, p50 {f['p50_ms']} ms, "
            f"p99 {f['p99_ms']} ms, cpu us/task {f['cpu_us_per_task']}"
        )
        reps.append(r)
    return reps


def main(argv: list[str] | None = None) -> None:
    """Producer mode (default) or worker mode (`--worker-url`, started by the producer)."""
    args = parse_args(argv)
    if args.worker_url:
        run_async(worker_main(args.worker_url, args.batch, args.ack))
        return
    reps, loop_name = run_async(main_async(args))
    params = {
        "sync": args.sync,
        "tasks": args.tasks,
        "inflight": args.inflight,
        "reps": args.reps,
        "payload_bytes": args.payload_bytes,
        "workers": args.workers,
        "batch": args.batch,
        "ack": args.ack,
        "loop": loop_name,
        "nats_py": version("nats-py"),
        "nats_server": nats_server_version(),
    }
    emit_json(summarize("raw_nats", params, reps))


if __name__ == "__main__":
    main()
