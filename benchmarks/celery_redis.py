"""The incumbent: the same task round trip with Celery, a Redis broker and a Redis result backend.

Celery is what a team would reach for instead of the hub, so the hub should be measured
against it on equal terms: acks late (a task is acked after it ran, as the hub acks after the
result is stored), a prefork pool of 2 processes, Redis AOF with `appendfsync everysec`
(`--sync 1s`) or `always` (`--sync always`), a no-op task that returns its payload. The
producer keeps K tasks in flight from one thread, using Celery's own result machinery (one
Redis pub/sub connection, `AsyncResult.then` callbacks), and measures submit-to-result latency.

    python benchmarks/celery_redis.py --tasks 5000 --inflight 64 --sync 1s

This file is also the Celery app module that the worker process imports (`-A celery_redis`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    SYNC_MODES,
    CpuMeter,
    Progress,
    RepResult,
    add_task_flags,
    emit_json,
    find_binary,
    free_port,
    note_rep,
    progress,
    spawn,
    stop_pid,
    summarize,
    task_params,
    wait_for_log,
)

try:
    from celery import Celery
    from celery.result import AsyncResult
except ImportError as exc:  # pragma: no cover - depends on the bench extra
    raise SystemExit(
        "error: celery is not installed; run: pip install -e '.[bench]' "
        "(or pip install 'celery[redis]' redis)"
    ) from exc

HERE = Path(__file__).resolve().parent
APPEND_FSYNC = {"1s": "everysec", "always": "always"}


def make_app(url: str, prefetch: int = 4) -> Celery:
    """A Celery app on one Redis for broker and results, acks late, JSON, default pool settings."""
    celery_app = Celery("bench", broker=url, backend=url)
    celery_app.conf.update(
        task_acks_late=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=prefetch,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery_app


# The worker's app (it imports this file); the producer makes one per rep with `make_app`.
app = make_app(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    int(os.environ.get("BENCH_PREFETCH", "4")),
)


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]
def echo(payload: str) -> str:
    """The no-op task: its result is its payload, like the raw NATS worker's."""
    return payload


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags of raw_nats.py that apply to Celery, plus the prefetch multiplier."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_task_flags(p)
    p.add_argument(
        "--sync", choices=SYNC_MODES, default="always", help="Redis appendfsync always|everysec"
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions (fresh Redis and worker each)")
    p.add_argument("--workers", type=int, default=2, help="prefork pool processes")
    p.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    return p.parse_args(argv)


def start_redis(sync: str, tmp: Path) -> tuple[str, int]:
    """redis-server on a free loopback port with AOF in `tmp`; return (url, pid)."""
    binary = find_binary("redis-server", "install it with: apt-get install -y redis-server")
    port = free_port()
    log = tmp / "redis.log"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp)]
    argv += ["--appendonly", "yes", "--appendfsync", APPEND_FSYNC[sync], "--save", ""]
    argv += ["--daemonize", "no", "--logfile", str(log)]
    pid = spawn(argv)
    try:
        wait_for_log(log, "Ready to accept connections", pid)
    except BaseException:
        stop_pid(pid)
        raise
    return f"redis://127.0.0.1:{port}/0", pid


def start_worker(args: argparse.Namespace, url: str, tmp: Path) -> int:
    """The Celery worker (main process + prefork pool), importing this file as its app."""
    env = dict(os.environ)
    env.update(
        BENCH_REDIS_URL=url,
        BENCH_PREFETCH=str(args.prefetch),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    argv = [sys.executable, "-m", "celery", "-A", Path(__file__).stem, "worker"]
    argv += ["--pool", "prefork", "--concurrency", str(args.workers), "--loglevel", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", "bench@%h"]
    return spawn(argv, env=env, cwd=HERE, log_path=tmp / "celery-worker.log")


def run_phase(
    client: Celery,
    n: int,
    inflight: int,
    payload: str,
    timeout_s: float,
    bar: Progress | None = None,
) -> list[float]:
    """Run n tasks keeping `inflight` submitted and unanswered; return the latencies.

    One thread: submit, then let Celery's result consumer drain its pub/sub connection; each
    result fires its `then` callback, which only records (submitting from inside Celery's
    drain would re-enter its result consumer), and the loop tops the window back up.
    """
    t0: dict[str, float] = {}
    latencies: list[float] = []
    finished: deque[str] = deque()
    consumer: Any = client.backend.result_consumer
    deadline = time.monotonic() + timeout_s
    submitted = 0
    live: dict[str, AsyncResult] = {}

    def on_ready(result: AsyncResult) -> None:
        now = time.perf_counter()
        start = t0.pop(result.id, None)
        if start is not None:
            latencies.append(now - start)
            finished.append(result.id)

    while len(latencies) < n:
        while submitted < n and len(t0) < inflight:
            start = time.perf_counter()
            r = client.send_task("bench.echo", (payload,))
            t0[r.id] = start
            live[r.id] = r  # the backend keeps results weakly; keep ours alive
            r.then(on_ready)
            submitted += 1
        consumer.drain_events(timeout=0.5)
        while finished:
            result = live.pop(finished.popleft())
            if result.result != payload:
                raise RuntimeError(f"task {result.id} returned {result.result!r:.80}")
            if bar is not None:
                bar.advance()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(latencies)}/{n} results after {timeout_s} s")
    return latencies


def run_rep(args: argparse.Namespace, rep: int) -> RepResult:
    """One rep on a fresh Redis and worker: warm up (which also waits for the worker), measure."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    pids: list[int] = []
    client: Celery | None = None
    try:
        url, redis_pid = start_redis(args.sync, tmp)
        pids.append(redis_pid)
        client = make_app(url, args.prefetch)
        worker_pid = start_worker(args, url, tmp)
        pids.append(worker_pid)
        payload = "x" * args.payload_bytes
        run_phase(client, max(1, args.warmup), args.inflight, payload, timeout_s=60.0)
        meter = CpuMeter(
            {"producer": [os.getpid()], "workers": [worker_pid], "redis_server": [redis_pid]},
            with_children=("workers",),
        )
        meter.start()
        t0 = time.perf_counter()
        with progress(args.tasks, f"celery_redis rep {rep + 1}/{args.reps}") as bar:
            lat = run_phase(client, args.tasks, args.inflight, payload, args.timeout, bar)
        elapsed = time.perf_counter() - t0
        return RepResult(args.tasks, elapsed, lat, meter.stop())
    finally:
        if client is not None:
            close_client(client)
        for pid in reversed(pids):
            stop_pid(pid, grace_s=10.0)
        shutil.rmtree(tmp, ignore_errors=True)


def close_client(client: Celery) -> None:
    """Close the producer's broker and result connections before their Redis goes away."""
    backend: Any = client.backend
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None and getattr(consumer, "_pubsub", None) is not None:
        consumer.stop()
    backend.client.connection_pool.disconnect()
    client.close()


def main(argv: list[str] | None = None) -> None:
    """Run the reps and print the result line."""
    args = parse_args(argv)
    reps = []
    for rep in range(args.reps):
        reps.append(run_rep(args, rep))
        note_rep(rep, reps[-1])
    params = {
        **task_params(args),
        "workers": args.workers,
        "prefetch": args.prefetch,
        "acks_late": True,
        "celery": version("celery"),
        "redis_py": version("redis"),
    }
    emit_json(summarize("celery_redis", params, reps))


if __name__ == "__main__":
    main()
