"""Shared helpers for the hub benchmarks: a whole hub on loopback, every process by its PID.

`HubRig` starts the hub's own embedded nats-server (`hub.nats.server.EmbeddedNats`, with the
durability mode named), R replicas (`python -m hub serve`) and M reference nodes
(`python -m hub node`, kind `echo`) as separate processes, waits until they are ready, and
stops every one of them by PID on exit. The agent is the benchmark's own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    emit_json,
    free_port,
    median,
    nats_server_version,
    note,
    run_async,
    spawn,
    stop_pid,
    wait_for_log,
)

from hub.client import Client
from hub.grpc import environment
from hub.nats.server import EmbeddedNats

HERE = Path(__file__).resolve().parent


def hub_env(**values: str) -> dict[str, str]:
    """Our environment without stray HUB_* variables, plus `values` as HUB_<NAME>, and
    benchmarks/ on the path (for `--handlers _handlers` and `python -m _stamps`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({f"HUB_{k.upper()}": v for k, v in values.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


class HubRig:
    """Embedded NATS + R replica processes + M node processes, cleaned up by PID."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        nodes: int = 2,
        slots: int = 32,
        sync: str = "1s",
        replica_env: dict[str, str] | None = None,
        node_args: Sequence[str] = (),
        start_nodes: bool = True,
        loop: str = "uvloop",
        module: str = "hub",
    ) -> None:
        self.n_replicas, self.n_nodes, self.slots, self.sync = replicas, nodes, slots, sync
        self.loop = loop  # HUB_EVENT_LOOP of every replica and node
        self.module = module  # what `python -m` runs as the hub command (`_stamps`: timed steps)
        self.replica_env = replica_env or {}
        self.node_args = list(node_args)
        self.start_nodes = start_nodes
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
        self.nats = EmbeddedNats(self.tmp / "nats", sync=sync)
        self.replica_pids: list[int] = []
        self.node_pids: list[int] = []
        self.addrs: list[str] = []
        self.clients: list[Client] = []
        self.keep_logs = False  # set when start fails, so the logs it names are still there

    @property
    def nats_pid(self) -> int:
        return self.nats.pid

    def cpu_groups(self, agent_pid: int) -> dict[str, list[int]]:
        return {
            "agent": [agent_pid],
            "replicas": list(self.replica_pids),
            "nodes": list(self.node_pids),
            "nats_server": [self.nats_pid],
        }

    def hub_pids(self) -> dict[str, int]:
        """Each replica and node by name (replica0, node0, ...), for ``_profile.counting``."""
        named = {f"replica{i}": pid for i, pid in enumerate(self.replica_pids)}
        return named | {f"node{i}": pid for i, pid in enumerate(self.node_pids)}

    def named_pids(self, agent_pid: int) -> dict[str, int]:
        """The hub's processes and the agent, for ``_profile.recording``."""
        return {"agent": agent_pid} | self.hub_pids()

    async def start(self) -> None:
        await self.nats.start()
        for i in range(self.n_replicas):
            port = free_port()
            addr = f"127.0.0.1:{port}"
            log = self.tmp / f"replica-{i}.log"
            env = hub_env(
                nats_url=self.nats.url,
                grpc_addr=addr,
                nats_sync=self.sync,
                event_loop=self.loop,
                **self.replica_env,
            )
            pid = spawn([sys.executable, "-m", self.module, "serve"], log_path=log, env=env)
            self.replica_pids.append(pid)
            await asyncio.to_thread(wait_for_log, log, "serving on port", pid, 30.0)
            self.addrs.append(addr)
        self.clients = [Client(a) for a in self.addrs]
        if self.start_nodes:
            for i in range(self.n_nodes):
                await self.start_node(f"bench-n{i}", i)
            await self.wait_nodes(self.n_nodes)

    async def start_node(self, node_id: str, i: int = 0, slots: int | None = None) -> int:
        """A reference node; its first address is replica i mod R (the others are fallbacks)."""
        rot = self.addrs[i % len(self.addrs) :] + self.addrs[: i % len(self.addrs)]
        argv = [sys.executable, "-m", self.module, "node", "--id", node_id, "--hub", ",".join(rot)]
        argv += ["--slots", str(slots or self.slots), *self.node_args]
        log = self.tmp / f"node-{node_id}.log"
        pid = spawn(argv, log_path=log, env=hub_env(event_loop=self.loop))
        self.node_pids.append(pid)
        return pid

    async def wait_nodes(self, count: int, timeout_s: float = 30.0) -> None:
        """Until `count` nodes are attached (their presence in hub_nodes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with_presence = len((await self.clients[0].nodes()).nodes)
            if with_presence >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"only {with_presence}/{count} nodes attached; logs in {self.tmp}")

    async def stop(self) -> None:
        for c in self.clients:
            await c.close()
        for pid in self.node_pids:
            stop_pid(pid)
        for pid in self.replica_pids:
            stop_pid(pid)
        await self.nats.stop()
        if not self.keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            note(f"hub rig failed to start; logs kept in {self.tmp}")
            self.keep_logs = True
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def handler_rig(args: argparse.Namespace) -> HubRig:
    """A rig whose nodes run the benchmark kinds of `_handlers.py`, with a slot for each task."""
    slots = max(1, math.ceil(args.tasks / args.nodes))
    return HubRig(
        nodes=args.nodes,
        slots=slots,
        sync=args.sync,
        node_args=["--handlers", "_handlers"],
        loop=args.loop,
    )


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hub_params() -> dict[str, Any]:
    """Versions for the result line, and the gRPC experiments every process ran with (the
    engine moves a gRPC hop's cost by 40 %: docs/benchmarks.md, "gRPC's engine")."""
    from importlib.metadata import version

    return {
        "nats_py": version("nats-py"),
        "grpcio": version("grpcio"),
        "grpc_experiments": environment.experiments(),
    }


def run_reps(
    args: argparse.Namespace,
    rep: Callable[[], Awaitable[dict[str, float]]],
    *,
    digits: int = 3,
) -> tuple[list[dict[str, float]], str]:
    """Run ``rep`` ``args.reps`` times on the chosen event loop, noting each; (reps, loop)."""

    async def reps() -> list[dict[str, float]]:
        out = []
        for i in range(args.reps):
            out.append(await rep())
            note(f"rep {i + 1}: {json.dumps({k: round(v, digits) for k, v in out[-1].items()})}")
        return out

    return run_async(reps(), args.loop)


def emit_reps(
    bench: str,
    args: argparse.Namespace,
    params: dict[str, Any],
    reps: list[dict[str, float]],
    loop: str,
    *,
    digits: int = 3,
    **extra: Any,
) -> None:
    """The result line of a hub benchmark: its parameters, the medians over the reps, the raw
    values, and the versions and machine they were taken on."""
    keys = list(reps[0])
    emit_json(
        {
            "bench": bench,
            "sync": args.sync,
            **params,
            "reps": args.reps,
            "loop": loop,
            **{k: round(median([r[k] for r in reps]), digits) for k in keys},
            "raw": {k: [round(r[k], digits) for r in reps] for k in keys},
            **hub_params(),
            "nats_server": nats_server_version(),
            "host": {"cpus": os.cpu_count()},
            **extra,
        }
    )
