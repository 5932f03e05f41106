"""The ``hub`` command against a real replica: JSON output and the documented exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from grpchub import GrpcHub, addr
from hubtest import children, eventually

from hub.client import Client, ClientError
from hub.dev.cluster import free_ports
from hub.dev.procs import HubProcess, replica_process
from hub.grpc.environment import GRPC_ENVIRONMENT
from hub.nats.server import EmbeddedNats
from hub.node import Fail, TaskContext

EXIT_OK, EXIT_TASK_FAILED, EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_UNAVAILABLE = (
    0,
    1,
    2,
    3,
    4,
    5,
)


def _clean_env(**env: str) -> dict[str, str]:
    """The test run's environment without its HUB_* and GRPC_* variables, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "GRPC_"))}
    return base | env


async def hub(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> tuple[int, str, str]:
    """Run ``python -m hub ARGS`` (bounded) in ``_clean_env``; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_clean_env(**(env or {})),
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            for child in children(process.pid):  # e.g. a demo's nodes, in sessions of their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def echo(ctx: TaskContext) -> bytes:
    ctx.stdout("said it\n")
    return ctx.payload


async def test_submit_wait_get_pool_nodes_and_dlq_speak_json(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    await e2e_hub.node(addr(replica), "n1", {"echo": echo})
    at = ["--hub", addr(replica), "--json"]

    code, out, err = await hub("submit", "echo", "--payload", '{"x": 1}', "--wait", *at)
    assert code == EXIT_OK, err
    task = json.loads(out)
    assert (task["status"], task["result"], task["node_id"]) == ("succeeded", '{"x": 1}', "n1")
    assert task["stdout"]["head"] == "said it\n" and task["stdout"]["total_bytes"] == 8

    code, out, _ = await hub("get", task["task_id"], *at)
    assert code == EXIT_OK and json.loads(out)["attempt"] == 1
    code, out, _ = await hub("pool", *at)
    assert code == EXIT_OK and json.loads(out)["queued"]["normal"] == 0
    code, out, _ = await hub("nodes", *at)
    assert code == EXIT_OK and [n["node_id"] for n in json.loads(out)["nodes"]] == ["n1"]
    code, out, _ = await hub("dlq", "list", *at)
    assert code == EXIT_OK and json.loads(out) == {"dead": []}


async def test_exit_codes(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    at = ["--hub", addr(replica)]
    code, _, err = await hub("get", "no-such-task", *at)
    assert code == EXIT_NOT_FOUND and "not found" in err
    code, _, err = await hub("submit", "bad kind!", *at)
    assert code == EXIT_BAD_INPUT and "kind" in err
    code, _, err = await hub("submit", "echo", "--payload", "{not json", *at)
    assert code == EXIT_BAD_INPUT and "JSON" in err
    # nobody runs it: the wait times out, the task is still queued
    code, out, _ = await hub(
        "submit", "echo", "--node", "absent", "--wait", "--timeout", "0.5", *at
    )
    assert code == EXIT_TIMEOUT and "queued" in out
    (port,) = free_ports(1)
    code, _, err = await hub("pool", "--hub", f"127.0.0.1:{port}")
    assert code == EXIT_UNAVAILABLE and "UNAVAILABLE" in err


async def test_a_failed_task_exits_1(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()

    async def boom(ctx: TaskContext) -> None:
        raise Fail("no good", retry=False)

    await e2e_hub.node(addr(replica), "n1", {"boom": boom})
    code, out, _ = await hub("submit", "boom", "--wait", "--json", "--hub", addr(replica))
    assert code == EXIT_TASK_FAILED
    assert (json.loads(out)["status"], json.loads(out)["error"]) == ("failed", "no good")


async def test_invalid_settings_name_the_variable() -> None:
    code, _, err = await hub("serve", env={"HUB_ACK_WAIT_S": "-3"})
    assert code == EXIT_BAD_INPUT and "HUB_ACK_WAIT_S" in err
    code, _, err = await hub("serve", env={"HUB_NATS_SYNC": "sometimes"})
    assert code == EXIT_BAD_INPUT and "HUB_NATS_SYNC" in err

    code, _, err = await hub("serve", env={"HUB_EVENT_LOOP": "trio"})
    assert code == EXIT_BAD_INPUT and "HUB_EVENT_LOOP" in err


async def test_a_misspelt_setting_is_reported_even_when_another_is_invalid() -> None:
    code, _, err = await hub("serve", env={"HUB_ACK_WAIT": "60", "HUB_ACK_WAIT_S": "-3"})
    assert code == EXIT_BAD_INPUT
    assert "unknown setting HUB_ACK_WAIT " in err and "HUB_ACK_WAIT_S" in err


async def test_demo_runs_a_burst_through_a_node_kill_without_grpc_noise() -> None:
    """The README's first command. It starts its nodes while its replicas' gRPC threads are
    busy: gRPC's fork handlers then printed "skipping fork() handlers" to the user, for
    children that exec at once and never use them."""
    code, out, err = await hub("demo", "--tasks", "24", "--nodes", "2", timeout_s=90)
    assert code == EXIT_OK, out + err
    assert "SIGKILL node-1" in out
    assert "24 tasks in" in out
    assert "fork" not in err, err
    assert "Unknown experiment" not in err, err


def _python(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` in ``_clean_env(**env)`` (bounded)."""
    return subprocess.run(
        [sys.executable, *argv], env=_clean_env(**env), capture_output=True, text=True, timeout=60
    )


def test_the_hub_command_sets_grpcs_variables_before_grpc_reads_them() -> None:
    """gRPC reads GRPC_* once, as it is imported, and says so of an experiment it does not
    know: a probe name put in the hub's table is reported only if the table is applied first."""
    probe = (
        "import sys; from hub.grpc import environment; "
        "environment.GRPC_ENVIRONMENT['GRPC_EXPERIMENTS'] = 'hub_probe'; "
        "sys.argv = ['hub', '--help']; from hub.__main__ import main; main()"
    )
    done = _python("-c", probe)
    assert done.returncode == EXIT_OK, done.stderr
    assert "Unknown experiment: hub_probe" in done.stderr

    done = _python("-m", "hub", "--help")  # the real table: names this grpcio knows
    assert done.returncode == EXIT_OK and "usage: hub" in done.stdout
    assert "Unknown experiment" not in done.stderr, done.stderr

    done = _python("-m", "hub", "--help", GRPC_EXPERIMENTS="hub_probe")  # yours wins
    assert "Unknown experiment: hub_probe" in done.stderr


def test_a_program_using_the_sdks_can_apply_the_table_before_grpc_reads_it() -> None:
    """The README's recipe: importing hub.grpc.environment must not import grpc."""
    recipe = (
        "from hub.grpc import environment; "
        "environment.GRPC_ENVIRONMENT['GRPC_EXPERIMENTS'] = 'hub_probe'; "
        "environment.apply(); from hub.client import Client; from hub.node import Node"
    )
    done = _python("-c", recipe)
    assert done.returncode == 0, done.stderr
    assert "Unknown experiment: hub_probe" in done.stderr


async def _started(proc: HubProcess) -> bool:
    return "serving on port" in proc.log.read_text()


async def _answers(client: Client) -> bool:
    try:
        await client.pool()
    except ClientError:
        return False
    return True


async def test_a_replica_names_its_journal_buckets_and_the_next_takes_them(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """HUB_JOURNAL_SHARDS reaches the journal a replica makes; a replica started later with the
    setting unset runs with the journal's count, and both say so in their start-up line."""
    for name, env in (("first", _clean_env(HUB_JOURNAL_SHARDS="3")), ("second", _clean_env())):
        proc, _ = replica_process(name, nats_server.url, env, tmp_path)
        await proc.start()
        try:
            await eventually(functools.partial(_started, proc), timeout_s=30, interval_s=0.2)
            assert "journal buckets 3," in proc.log.read_text()
        finally:
            await proc.stop()


def _event_engine_wakeups(pid: int) -> int:
    """Context switches so far of the process's threads named ``event_engine`` (gRPC's)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if (task / "comm").read_text().strip() != "event_engine":
                continue
            status = (task / "status").read_text().splitlines()
            fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
            total += int(fields["voluntary_ctxt_switches"])
            total += int(fields["nonvoluntary_ctxt_switches"])
    return total


async def test_a_replica_answers_without_waking_grpcs_event_engine(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """What the hub's GRPC_EXPERIMENTS is for (README, "Configuration"): on gRPC's EventEngine
    each call woke its threads about four times; on the I/O manager they stay asleep. The
    replica's start-up line names the value it runs with."""
    calls, per_call = 200, dict[str, float]()
    runs = (
        ("hub's", _clean_env(), GRPC_ENVIRONMENT["GRPC_EXPERIMENTS"]),
        ("grpcio's", _clean_env(GRPC_EXPERIMENTS=""), ""),
    )
    for engine, env, experiments in runs:
        proc, address = replica_process(engine, nats_server.url, env, tmp_path)
        await proc.start()
        try:
            async with Client(address, timeout_s=2) as client:
                await eventually(functools.partial(_answers, client), timeout_s=30, interval_s=0.2)
                await eventually(functools.partial(_started, proc), timeout_s=10)
                assert f"GRPC_EXPERIMENTS={experiments})" in proc.log.read_text()
                assert _event_engine_wakeups(proc.pid) > 0  # (its threads exist either way)
                before = _event_engine_wakeups(proc.pid)
                for _ in range(calls):
                    await client.pool()
                per_call[engine] = (_event_engine_wakeups(proc.pid) - before) / calls
        finally:
            await proc.stop()
    assert per_call["hub's"] < 0.5 and per_call["grpcio's"] > 1.5, per_call
