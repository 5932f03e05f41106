"""The ceiling: the hub's task round trip in plain nats-py, with no hub code in the way.

A producer publishes tasks (with `Nats-Msg-Id`) to a file-stored work-queue stream and keeps K
in flight; worker *processes* pull from one shared durable consumer, put each result in a KV
bucket (`res.<id>`) and ack only after that put is confirmed; the producer sees every result
through ONE subscription on the bucket's republish subject (not one watcher per task) and
measures submit-to-result latency. What the hub adds on top of this path is the gap to here.

Two styles of the same protocol (`--style`):
  raw  (default, the ceiling) no awaited round trip per task anywhere: workers keep lingering
       pull requests topped up (credit, like nats.go's Consume) and handle each message in
       the subscription callback; publishes and KV puts are pipelined with a reply inbox and
       their PubAcks handled in a callback; the producer submits the next task from the
       result callback.
  api  idiomatic nats-py: `await js.publish` per task from K submitter coroutines; workers
       `fetch(batch)`, then `kv.put` (concurrently over the batch) and `ack`.

    python benchmarks/raw_nats.py --tasks 5000 --inflight 64 --sync 1s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

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
from _common import (
    CpuMeter,
    Progress,
    RepResult,
    add_rep_flags,
    add_task_flags,
    each_rep,
    emit_json,
    nats_server_version,
    progress,
    run_async,
    spawn,
    stop_pid,
    summarize,
    task_params,
)

from hub.nats.server import EmbeddedNats

THIS_FILE = str(Path(__file__).resolve())
STREAM = "BENCH_TASKS"
CONSUMER = "workers"
BUCKET = "bench_results"
TASK_PREFIX = "bench.tasks."
DONE_PREFIX = "bench.done.res."  # the bucket republishes $KV.bench_results.res.<id> here
RESULT_PREFIX = f"$KV.{BUCKET}.res."
READY_SUBJECT = "bench.ready"
PULL_SUBJECT = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{CONSUMER}"
PULL_EXPIRES_NS = 2_000_000_000  # idle workers re-pull every 2 s; messages arrive at once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags shared with the other peer benchmarks, plus the hidden worker mode."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_task_flags(p)
    add_rep_flags(p, sync="always")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--style", choices=("raw", "api"), default="raw", help="see above")
    p.add_argument("--batch", type=int, default=64, help="pull batch / credit per worker")
    p.add_argument("--ack", choices=("ack", "ack_sync"), default="ack", help="how workers ack")
    p.add_argument("--worker-url", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def is_status(m: Msg) -> bool:
    """A JetStream status message (408 request expired, 409, 100 heartbeat), not a task."""
    return bool(m.headers) and "Status" in m.headers  # type: ignore[operator]


# --- worker process --------------------------------------------------------------------------


async def api_worker(nc: Client, batch: int, ack: str, stop: asyncio.Event) -> None:
    """Idiomatic: fetch a batch, put every result concurrently, ack each after its put.

    Pitfall (nats-py 2.16): when the fetch starts on an empty consumer it becomes a lingering
    pull and then waits for a *full* batch or its whole timeout, so with fewer than `batch`
    tasks in flight a task can sit in the worker for the fetch timeout (see the README).
    """
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    kv = await js.key_value(BUCKET)

    async def handle(m: Msg) -> None:
        await kv.put("res." + m.subject[len(TASK_PREFIX) :], m.data)
        await (m.ack_sync() if ack == "ack_sync" else m.ack())

    await nc.publish(READY_SUBJECT, b"")
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        await asyncio.gather(*(handle(m) for m in msgs))


class RawWorker:
    """Callback-driven worker: lingering pulls kept topped up, pipelined KV puts, ack on PubAck.

    Nothing awaits a round trip per task: each message is handled in the subscription
    callback by one publish (the KV put, with a reply inbox), and the put's PubAck callback
    acks the task. That is what makes this the ceiling for a Python process.
    """

    def __init__(self, nc: Client, batch: int, ack: str) -> None:
        self.nc, self.batch, self.ack = nc, batch, ack
        self.credit = 0  # messages asked for and not yet delivered or expired
        self.pending: dict[str, Msg] = {}  # put token -> task message to ack
        self.seq = 0
        self.last_seen = time.monotonic()
        self.pull_inbox = nc.new_inbox()
        self.put_inbox = nc.new_inbox()
        self.ack_inbox = nc.new_inbox()

    async def start(self) -> None:
        await self.nc.subscribe(self.pull_inbox, cb=self.on_task)
        await self.nc.subscribe(self.put_inbox + ".*", cb=self.on_put_ack)
        if self.ack == "ack_sync":
            await self.nc.subscribe(self.ack_inbox, cb=self.on_ack_reply)
        await self.nc.flush()
        await self.nc.flush()
        await self.top_up()

    async def top_up(self) -> None:
        """Ask for more once half the credit is used, so the pipe never runs dry."""
        if self.credit > self.batch // 2:
            return
        n = self.batch - self.credit
        self.credit += n
        req = json.dumps({"batch": n, "expires": PULL_EXPIRES_NS}).encode()
        await self.nc.publish(PULL_SUBJECT, req, reply=self.pull_inbox)

    async def on_task(self, m: Msg) -> None:
        self.last_seen = time.monotonic()
        if is_status(m):  # an expired pull request gives back its undelivered credit
            left = int(m.headers.get("Nats-Pending-Messages", "0"))  # type: ignore[union-attr]
            self.credit = max(0, self.credit - left)
        else:
            self.credit -= 1
            self.seq += 1
            token = str(self.seq)
            self.pending[token] = m
            key = m.subject[len(TASK_PREFIX) :]
            await self.nc.publish(RESULT_PREFIX + key, m.data, reply=f"{self.put_inbox}.{token}")
        await self.top_up()

    async def on_put_ack(self, r: Msg) -> None:
        m = self.pending.pop(r.subject[len(self.put_inbox) + 1 :], None)
        if m is None:
            return
        if b'"error"' in r.data:  # not stored: let JetStream redeliver the task
            await m.nak()
        elif self.ack == "ack_sync":
            await self.nc.publish(m.reply, b"", reply=self.ack_inbox)
        else:
            await m.ack()

    async def on_ack_reply(self, r: Msg) -> None:
        """The server's confirmation of an ack (`ack_sync` semantics without a future)."""

    async def watchdog(self, stop: asyncio.Event) -> None:
        """Bounded recovery: if nothing (not even a 408) came for 3 expiries, re-pull."""
        while not stop.is_set():
            await asyncio.sleep(1.0)
            if time.monotonic() - self.last_seen > 3 * PULL_EXPIRES_NS / 1e9:
                self.credit, self.last_seen = 0, time.monotonic()
                await self.top_up()


async def worker_main(url: str, style: str, batch: int, ack: str) -> None:
    """A worker process: run one style until SIGTERM."""
    nc = await nats.connect(url, name="bench-worker")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if style == "api":
        await api_worker(nc, batch, ack, stop)
    else:
        w = RawWorker(nc, batch, ack)
        await w.start()
        await nc.publish(READY_SUBJECT, b"")
        await w.watchdog(stop)
    await nc.close()


# --- producer --------------------------------------------------------------------------------


async def setup(js: JetStreamContext) -> None:
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
            durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=-1
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


class Phase:
    """One batch of n tasks with K in flight; `done` resolves with the latencies."""

    def __init__(self, prefix: str, n: int, bar: Progress | None) -> None:
        self.prefix, self.n, self.bar = prefix, n, bar
        self.next_i = 0
        self.t0: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.latencies: list[float] = []
        self.done: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()

    def next_id(self) -> str | None:
        if self.next_i >= self.n:
            return None
        self.next_i += 1
        return f"{self.prefix}{self.next_i - 1}"

    def finished(self, task_id: str, now: float) -> bool:
        """Record one result; False if it is not ours (e.g. a duplicate)."""
        t0 = self.t0.pop(task_id, None)
        if t0 is None:
            return False
        self.latencies.append(now - t0)
        if self.bar is not None:
            self.bar.advance()
        if len(self.latencies) == self.n and not self.done.done():
            self.done.set_result(self.latencies)
        return True

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))


class Producer:
    """Submits tasks with K in flight and matches results from one republish subscription."""

    def __init__(self, nc: Client, style: str, payload: bytes) -> None:
        self.nc, self.js, self.style, self.payload = nc, nc.jetstream(), style, payload
        self.puback_inbox = nc.new_inbox()
        self.phase: Phase | None = None

    async def start(self) -> None:
        await self.nc.subscribe(DONE_PREFIX + ">", cb=self.on_result)
        await self.nc.subscribe(self.puback_inbox, cb=self.on_puback)

    async def submit_raw(self, task_id: str) -> None:
        """Pipelined publish: the PubAck comes to `on_puback`, nobody awaits it here."""
        assert self.phase is not None
        self.phase.t0[task_id] = time.perf_counter()
        await self.nc.publish(
            TASK_PREFIX + task_id,
            self.payload,
            reply=self.puback_inbox,
            headers={"Nats-Msg-Id": task_id},
        )

    async def on_puback(self, r: Msg) -> None:
        if b'"error"' in r.data and self.phase is not None:
            self.phase.fail(f"publish refused: {r.data!r}")

    async def on_result(self, msg: Msg) -> None:
        """One callback for every result; in raw style it also submits the next task."""
        now = time.perf_counter()
        phase, task_id = self.phase, msg.subject[len(DONE_PREFIX) :]
        if phase is None:
            return
        if self.style == "api":
            fut = phase.waiting.pop(task_id, None)
            if fut is not None and not fut.done():
                fut.set_result(now)
        elif phase.finished(task_id, now):
            nxt = phase.next_id()
            if nxt is not None:
                await self.submit_raw(nxt)

    async def run(
        self, prefix: str, n: int, inflight: int, bar: Progress | None = None
    ) -> list[float]:
        """Run n tasks keeping `inflight` submitted and unanswered; return the latencies."""
        phase = self.phase = Phase(prefix, n, bar)
        if self.style == "raw":
            for _ in range(min(inflight, n)):
                task_id = phase.next_id()
                assert task_id is not None
                await self.submit_raw(task_id)
        else:
            await asyncio.gather(*(self.api_submitter(phase) for _ in range(min(inflight, n))))
        return await phase.done

    async def api_submitter(self, phase: Phase) -> None:
        """One of K clients: await the PubAck, then await the result, then the next task."""
        loop = asyncio.get_running_loop()
        while (task_id := phase.next_id()) is not None:
            fut: asyncio.Future[float] = loop.create_future()
            phase.waiting[task_id] = fut
            phase.t0[task_id] = time.perf_counter()
            await self.js.publish(
                TASK_PREFIX + task_id, self.payload, headers={"Nats-Msg-Id": task_id}
            )
            phase.finished(task_id, await fut)


async def verify(js: JetStreamContext, results: int, timeout_s: float = 10.0) -> None:
    """Every result stored and the work queue drained (acks are async: wait, bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        queued = (await js.stream_info(STREAM)).state.messages
        stored = (await js.stream_info(f"KV_{BUCKET}")).state.messages
        if queued == 0 and stored == results:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"after the run: {queued} tasks queued, {stored}/{results} results")
        await asyncio.sleep(0.05)


async def run_rep(args: argparse.Namespace, rep: int) -> RepResult:
    """One rep on a fresh nats-server: setup, start workers, warm up, measure, clean up."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-raw-nats-"))
    worker_pids: list[int] = []
    # The hub's own embedded server and configuration, so both sides run the same nats-server.
    server = EmbeddedNats(tmp / "nats", sync=args.sync)
    url = await server.start()
    server_pid = server.pid
    try:
        nc = await nats.connect(url, name="bench-producer")
        await setup(nc.jetstream())
        producer = Producer(nc, args.style, b"x" * args.payload_bytes)
        await producer.start()
        ready: asyncio.Queue[Msg] = asyncio.Queue()
        await nc.subscribe(READY_SUBJECT, cb=ready.put)
        await nc.flush()
        await nc.flush()  # two flushes: a single one can overtake the SUB (notes §11)
        for _ in range(args.workers):
            argv = [sys.executable, THIS_FILE, "--worker-url", url, "--style", args.style]
            argv += ["--batch", str(args.batch), "--ack", args.ack, "--loop", args.loop]
            worker_pids.append(spawn(argv))
        for _ in range(args.workers):
            await asyncio.wait_for(ready.get(), timeout=30)
        if args.warmup:
            await asyncio.wait_for(producer.run("w", args.warmup, args.inflight), args.timeout)
        groups = {"producer": [os.getpid()], "workers": worker_pids, "nats_server": [server_pid]}
        meter = CpuMeter(groups)
        meter.start()
        t0 = time.perf_counter()
        with progress(args.tasks, f"raw_nats rep {rep + 1}/{args.reps}") as bar:
            lat = await asyncio.wait_for(
                producer.run("t", args.tasks, args.inflight, bar), timeout=args.timeout
            )
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        await verify(nc.jetstream(), args.tasks + args.warmup)
        await nc.close()
        return RepResult(args.tasks, elapsed, lat, cpu)
    finally:
        for pid in worker_pids:
            stop_pid(pid)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Producer mode (default) or worker mode (`--worker-url`, started by the producer)."""
    args = parse_args(argv)
    if args.worker_url:
        run_async(worker_main(args.worker_url, args.style, args.batch, args.ack), args.loop)
        return
    reps, loop_name = run_async(each_rep(args, run_rep), args.loop)
    params = {
        **task_params(args),
        "workers": args.workers,
        "style": args.style,
        "batch": args.batch,
        "ack": args.ack,
        "loop": loop_name,
        "nats_py": version("nats-py"),
        "nats_server": nats_server_version(),
    }
    emit_json(summarize("raw_nats", params, reps))


if __name__ == "__main__":
    main()
