"""Hub processes started by development tools (demo, dev cluster, chaos): replicas and nodes.

Each is a real ``python -m hub ...`` process, started in its own session so a SIGKILL takes
exactly it, and stopped by the PID we recorded, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from hub.dev.cluster import free_ports

__all__ = ("HubProcess", "node_process", "replica_process")


class HubProcess:
    """A ``python -m hub`` child that can be killed and started again with the same arguments."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, list(args), env, log
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hub",
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env,
                start_new_session=True,
            )
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL (a crash: no drain, no goodbye) and reap it."""
        if self.running and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (a replica drains, a node hands back), SIGKILL if it does not exit in time."""
        if not self.running or self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self.kill()


def replica_process(
    name: str, nats_url: str, env: dict[str, str], logs: Path, port: int = 0
) -> tuple[HubProcess, str]:
    """A replica on a fixed free port (so a restart comes back at the same address)."""
    port = port or free_ports(1)[0]
    addr = f"127.0.0.1:{port}"
    env = env | {"HUB_NATS_URL": nats_url, "HUB_GRPC_ADDR": addr}
    return HubProcess(name, ["serve"], env, logs / f"{name}.log"), addr


def node_process(
    node_id: str,
    addrs: Sequence[str],
    env: dict[str, str],
    logs: Path,
    *,
    slots: int = 4,
    handlers: Sequence[str] = (),
    capabilities: Sequence[str] = (),
) -> HubProcess:
    args = ["node", "--id", node_id, "--slots", str(slots), "--hub", ",".join(addrs)]
    for module in handlers:
        args += ["--handlers", module]
    for cap in capabilities:
        args += ["--capability", cap]
    return HubProcess(node_id, args, env, logs / f"{node_id}.log")
