"""``hub dev cluster`` and ``hub dev chaos``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from pathlib import Path

from hub.dev.chaos import chaos_command
from hub.dev.cluster import NatsCluster
from hub.dev.procs import node_process, replica_process

__all__ = ("run",)


async def cluster_command(servers: int, replicas: int, nodes: int) -> int:
    """A local cluster until Ctrl-C: NATS servers, replica and node processes; prints where."""
    with tempfile.TemporaryDirectory(prefix="hub-cluster-") as tmp:
        base = Path(tmp)
        async with NatsCluster(base / "nats", servers=servers) as cluster:
            env = dict(os.environ) | {"HUB_STREAM_REPLICAS": str(min(servers, 3))}
            reps = [
                replica_process(f"replica-{i + 1}", cluster.url, env, base / "logs")
                for i in range(replicas)
            ]
            addrs = [addr for _, addr in reps]
            procs = [p for p, _ in reps] + [
                node_process(
                    f"node-{i + 1}",
                    addrs[i % replicas :] + addrs[: i % replicas],
                    env,
                    base / "logs",
                )
                for i in range(nodes)
            ]
            for proc in procs:
                await proc.start()
            print(f"NATS     {cluster.url}", flush=True)  # noqa: T201
            print(f"replicas {','.join(addrs)}   (export HUB_ADDR={addrs[0]})", flush=True)  # noqa: T201
            print(f"nodes    {nodes}; logs in {base / 'logs'}; Ctrl-C stops all", flush=True)  # noqa: T201
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await asyncio.gather(*(p.stop() for p in reversed(procs)))
    return 0


async def run(args: argparse.Namespace) -> int:
    if args.dev_command == "cluster":
        return await cluster_command(args.servers, args.replicas, args.nodes)
    return await chaos_command(args.tasks, args.kills, args.seed, args.journal_shards, args.json)
