"""The ``hub`` command: run a replica, embedded NATS or a node; submit and follow tasks.

Exit codes (documented in the README): 0 ok, 1 the task failed (failed, dead, cancelled or
expired), 2 bad input, 3 not found, 4 timed out, 5 hub or NATS unavailable, 6 other errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hub.client import Client, ClientError
from hub.config import Settings, load_settings, unknown_env
from hub.errors import HubError, InvalidSettings, ServerFailed, Unavailable
from hub.grpc import environment
from hub.grpc.convert import priority_name, status_name
from hub.v1 import common_pb2

__all__ = ("main",)

log = logging.getLogger("hub")

EXIT_OK, EXIT_TASK_FAILED, EXIT_BAD_INPUT, EXIT_NOT_FOUND = 0, 1, 2, 3
EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_ERROR = 4, 5, 6
EXIT_FOR_CODE = {
    "INVALID_ARGUMENT": EXIT_BAD_INPUT,
    "RESOURCE_EXHAUSTED": EXIT_BAD_INPUT,
    "ALREADY_EXISTS": EXIT_BAD_INPUT,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "DEADLINE_EXCEEDED": EXIT_TIMEOUT,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "UNAUTHENTICATED": EXIT_BAD_INPUT,
}
FAILED_STATUSES = {"failed", "dead", "cancelled", "expired"}


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- output -----------------------------------------------------------------------------------


def _text(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _bytes_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def task_json(task: common_pb2.Task) -> dict[str, Any]:
    def buffer(b: common_pb2.Buffer) -> dict[str, Any]:
        return {
            "head": _bytes_text(b.head),
            "tail": _bytes_text(b.tail),
            "total_bytes": b.total_bytes,
            "dropped_bytes": b.dropped_bytes,
        }

    result = _text(task.result)
    return {
        "task_id": task.task_id,
        "status": status_name(task.status),
        "priority": priority_name(task.priority),
        "kind": task.kind,
        "route": {"node_id": task.route.node_id, "capabilities": list(task.route.capabilities)},
        "node_id": task.node_id,
        "attempt": task.attempt,
        "tries": task.tries,
        "max_attempts": task.max_attempts,
        "generation": task.generation,
        "result": result.get("text", result.get("base64", "")),
        "result_encoding": "base64" if "base64" in result else "utf-8",
        "error": task.error,
        "created_at": task.created_at,
        "finished_at": task.finished_at,
        "stdout": buffer(task.stdout),
        "thoughts": buffer(task.thoughts),
        "history": [
            {
                "attempt": h.attempt,
                "node_id": h.node_id,
                "outcome": h.outcome,
                "error": h.error,
                "started_at": h.started_at,
                "ended_at": h.ended_at,
            }
            for h in task.history
        ],
    }


def print_task(task: common_pb2.Task, as_json: bool) -> None:
    if as_json:
        print(json.dumps(task_json(task)))
        return
    data = task_json(task)
    print(f"{data['task_id']}  {data['status']}  {data['kind']}  priority={data['priority']}")
    if data["node_id"]:
        print(f"  node={data['node_id']} attempt={data['attempt']} tries={data['tries']}")
    if data["error"]:
        print(f"  error: {data['error']}")
    if task.result:
        print(f"  result: {data['result']}")


def _exit_for_status(task: common_pb2.Task) -> int:
    return EXIT_TASK_FAILED if status_name(task.status) in FAILED_STATUSES else EXIT_OK


# -- client commands ----------------------------------------------------------------------------


async def _submit(args: argparse.Namespace, client: Client) -> int:
    payload = args.payload.encode() if args.payload is not None else b""
    if args.payload is not None and not args.raw:
        try:
            json.loads(args.payload)
        except ValueError as exc:
            raise CliError(f"--payload is not valid JSON ({exc}); use --raw", 2) from None
    response = await client.submit(
        args.kind,
        payload,
        priority=args.priority,
        node=args.node or "",
        require=args.require or (),
        task_id=args.id or "",
        max_attempts=args.max_attempts,
        timeout_s=args.task_timeout,
    )
    task = response.task
    if args.wait:
        return await _wait_for(client, task.task_id, args.timeout, args.json)
    if args.json:
        print(json.dumps(task_json(task) | {"created": response.created}))
    else:
        print(task.task_id)
    return EXIT_OK


async def _wait_for(client: Client, task_id: str, wait_s: float, as_json: bool) -> int:
    response = await client.wait(task_id, wait_s, include_output=True)
    print_task(response.task, as_json)
    if not response.done:
        if not as_json:
            print(
                f"timed out after {wait_s} s; the task is still {status_name(response.task.status)}"
            )
        return EXIT_TIMEOUT
    return _exit_for_status(response.task)


async def _get(args: argparse.Namespace, client: Client) -> int:
    task = await client.get(args.task_id, include_output=True)
    print_task(task, args.json)
    return EXIT_OK


async def _wait(args: argparse.Namespace, client: Client) -> int:
    return await _wait_for(client, args.task_id, args.timeout, args.json)


async def _tail(args: argparse.Namespace, client: Client) -> int:
    if not args.follow:
        task = await client.get(args.task_id, include_output=True)
        buffer = getattr(task, args.stream)
        sys.stdout.buffer.write(buffer.head)
        if buffer.dropped_bytes:
            sys.stdout.write(f"\n[... {buffer.dropped_bytes} bytes dropped ...]\n")
        sys.stdout.buffer.write(buffer.tail)
        sys.stdout.flush()
        return EXIT_OK
    last: common_pb2.Task | None = None
    async for event in client.watch(args.task_id):
        if event.HasField("task"):
            last = event.task
        elif event.output.stream == args.stream:
            if event.output.skipped:
                sys.stdout.write(f"\n[... {event.output.skipped} bytes dropped ...]\n")
            sys.stdout.buffer.write(event.output.data)
            sys.stdout.flush()
    return _exit_for_status(last) if last is not None else EXIT_OK


async def _cancel(args: argparse.Namespace, client: Client) -> int:
    print_task(await client.cancel(args.task_id), args.json)
    return EXIT_OK


async def _pool(args: argparse.Namespace, client: Client) -> int:
    c = await client.pool()
    data: dict[str, Any] = {
        "queued": dict(c.queued),
        "oldest_age_s": dict(c.oldest_age_s),
        "in_flight": c.in_flight,
        "dead": c.dead,
    }
    if args.json:
        print(json.dumps(data))
    else:
        for p in ("critical", "high", "normal", "low"):
            queued, age = data["queued"].get(p, 0), data["oldest_age_s"].get(p, 0)
            print(f"{p:9} queued={queued:<7} oldest={age:.1f}s")
        print(f"in flight={c.in_flight} dead={c.dead}")
    return EXIT_OK


async def _nodes(args: argparse.Namespace, client: Client) -> int:
    nodes = (await client.nodes()).nodes
    data: list[dict[str, Any]] = [
        {
            "node_id": n.node_id,
            "capabilities": list(n.capabilities),
            "slots": n.slots,
            "free": n.free,
            "replica": n.replica,
            "seen_at": n.seen_at,
            "tasks": list(n.tasks),
        }
        for n in nodes
    ]
    if args.json:
        print(json.dumps({"nodes": data}))
    else:
        for n in data:
            caps = ",".join(n["capabilities"]) or "-"
            print(
                f"{n['node_id']:20} slots={n['slots']} free={n['free']} caps={caps} {n['replica']}"
            )
    return EXIT_OK


async def _dlq(args: argparse.Namespace, client: Client) -> int:
    if args.action == "list":
        dead = (await client.dead()).tasks
        data = [
            {
                "task_id": d.task_id,
                "kind": d.kind,
                "error": d.error,
                "generation": d.generation,
                "attempts": len(d.history),
                "dead_at": d.dead_at,
            }
            for d in dead
        ]
        if args.json:
            print(json.dumps({"dead": data}))
        else:
            for d in data:
                print(f"{d['task_id']}  {d['kind']}  attempts={d['attempts']}  {d['error']}")
        return EXIT_OK
    if args.action == "replay":
        if not args.task_id:
            raise CliError("dlq replay needs a task id", EXIT_BAD_INPUT)
        print_task(await client.replay(args.task_id), args.json)
        return EXIT_OK
    purged = await client.purge_dead(args.task_id or "")
    print(json.dumps({"purged": purged}) if args.json else f"purged {purged}")
    return EXIT_OK


# -- long-running commands ----------------------------------------------------------------------


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@contextlib.asynccontextmanager
async def nats_for(settings: Settings) -> Any:
    """The NATS URLs to use: the configured cluster, or an embedded server we start."""
    if not settings.embedded:
        yield settings.nats_urls
        return
    from hub.nats.server import EmbeddedNats

    async with EmbeddedNats(
        os.path.join(settings.data_dir, "nats-data"),
        port=settings.nats_port,
        sync=settings.nats_sync,
    ) as server:
        yield [server.url]


#: The collector's thresholds in a running replica or node. Each task allocates a few hundred
#: container objects that reference counting frees; at Python's default (700) a replica ran a
#: young collection every ten tasks and a full one, over every module, protobuf descriptor and
#: cached record, every few thousand: 6 % of its CPU at 64 tasks in flight. Cycles are rare on
#: the per-task paths, so collecting less often holds little garbage for longer.
GC_THRESHOLD = (10_000, 20, 20)


def settle_gc() -> None:
    """Once a long-running process has started: what is alive now (modules, descriptors,
    connections) lives as long as the process, so the collector stops walking it
    (``gc.freeze``), and young objects are collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def _serve(settings: Settings) -> int:
    from hub.replica import Replica

    async with nats_for(settings) as urls:
        replica = Replica(settings, urls)
        await replica.start()
        settle_gc()
        # (the gRPC experiments too: they move each gRPC hop's cost by 40 %, see
        # hub/grpc/environment.py, and an operator's own GRPC_EXPERIMENTS wins over ours)
        print(
            f"hub replica {replica.id} serving on port {replica.port} "
            f"(NATS {', '.join(urls)}, sync {settings.nats_sync}, "
            f"journal buckets {replica.pool.journal.shards}, "
            f"GRPC_EXPERIMENTS={environment.experiments()})",
            flush=True,
        )
        try:
            await _until_signal()
        finally:
            await replica.stop()
    return EXIT_OK


async def _nats(settings: Settings) -> int:
    async with nats_for(settings) as urls:
        print(f"NATS {urls[0]} (data {settings.data_dir}, sync {settings.nats_sync})", flush=True)
        await _until_signal()
    return EXIT_OK


async def _node(args: argparse.Namespace, settings: Settings) -> int:
    from hub import handlers
    from hub.node import Node

    table = handlers.builtin(allow_shell=args.allow_shell)
    for module in args.handlers or ():
        table.update(importlib.import_module(module).HANDLERS)
    node = Node(
        args.hub.split(","),
        args.id,
        slots=args.slots,
        capabilities=args.capability or (),
        token=args.token,
        handlers=table,
    )
    runner = asyncio.create_task(node.run())
    settle_gc()
    print(
        f"node {args.id} slots={args.slots} kinds={','.join(sorted(table))} hub={args.hub}",
        flush=True,
    )
    try:
        await _until_signal()
    finally:
        await node.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return EXIT_OK


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--hub",
            default=os.environ.get("HUB_ADDR", "127.0.0.1:50051"),
            help="hub address (HUB_ADDR)",
        )
        p.add_argument("--token", default=os.environ.get("HUB_TOKEN", ""), help="(HUB_TOKEN)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    sub.add_parser("serve", help="run one hub replica (embedded NATS unless HUB_NATS_URL)")
    sub.add_parser("nats", help="run only the embedded NATS, for several local replicas")
    demo = sub.add_parser("demo", help="a local hub with nodes and a burst of tasks, live")
    demo.add_argument("--tasks", type=int, default=120)
    demo.add_argument("--nodes", type=int, default=3)

    node = client_command("node", "run a reference node")
    node.add_argument("--id", required=True)
    node.add_argument("--slots", type=int, default=4)
    node.add_argument("--capability", action="append", metavar="TAG")
    node.add_argument("--allow-shell", action="store_true", help="enable the shell kind")
    node.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE",
        help="import MODULE and add its HANDLERS dict {kind: async fn}",
    )

    submit = client_command("submit", "submit a task")
    submit.add_argument("kind")
    submit.add_argument("--payload", help="JSON payload (or any text with --raw)")
    submit.add_argument("--raw", action="store_true", help="send --payload as is")
    submit.add_argument(
        "--priority", default="normal", choices=["critical", "high", "normal", "low"]
    )
    submit.add_argument("--node", help="run only on this node")
    submit.add_argument("--require", action="append", metavar="TAG", help="required capability")
    submit.add_argument("--id", help="task id (idempotent)")
    submit.add_argument("--max-attempts", type=int, default=0)
    submit.add_argument("--task-timeout", type=float, default=0.0, help="handler timeout, s")
    submit.add_argument("--wait", action="store_true", help="wait for the result")
    submit.add_argument("--timeout", type=float, default=60.0, help="with --wait, s")

    for name, help_text in (("get", "show a task"), ("cancel", "cancel a task")):
        client_command(name, help_text).add_argument("task_id")
    wait = client_command("wait", "wait for a task to finish")
    wait.add_argument("task_id")
    wait.add_argument("--timeout", type=float, default=60.0)
    tail = client_command("tail", "print a task's output")
    tail.add_argument("task_id")
    tail.add_argument("--follow", "-f", action="store_true")
    tail.add_argument("--stream", choices=["stdout", "thoughts"], default="stdout")
    client_command("pool", "queued, in flight and dead counts")
    client_command("nodes", "attached nodes")
    dlq = client_command("dlq", "dead letters")
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("task_id", nargs="?", default="")

    dev = sub.add_parser("dev", help="development tools")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    cluster = dev_sub.add_parser("cluster", help="a local NATS cluster with replicas and nodes")
    cluster.add_argument("--servers", type=int, default=3)
    cluster.add_argument("--replicas", type=int, default=2)
    cluster.add_argument("--nodes", type=int, default=3)
    chaos = dev_sub.add_parser("chaos", help="kill things under load and check nothing is lost")
    chaos.add_argument("--tasks", type=int, default=500)
    chaos.add_argument("--kills", type=int, default=10)
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--journal-shards", type=int, default=1, help="HUB_JOURNAL_SHARDS")
    chaos.add_argument("--json", action="store_true")
    return parser


CLIENT_COMMANDS: dict[str, Callable[[argparse.Namespace, Client], Awaitable[int]]] = {
    "submit": _submit,
    "get": _get,
    "wait": _wait,
    "tail": _tail,
    "cancel": _cancel,
    "pool": _pool,
    "nodes": _nodes,
    "dlq": _dlq,
}


async def _run(args: argparse.Namespace, settings: Settings | None) -> int:
    if settings is None:
        async with Client(args.hub, token=args.token) as client:
            return await CLIENT_COMMANDS[args.command](args, client)
    if args.command == "serve":
        return await _serve(settings)
    if args.command == "nats":
        return await _nats(settings)
    if args.command == "node":
        return await _node(args, settings)
    if args.command == "demo":
        from hub.demo import run_demo

        return await run_demo(tasks=args.tasks, nodes=args.nodes)
    from hub.dev import commands

    return await commands.run(args)


def _settings() -> Settings:
    """The server side's settings, read before its event loop starts (the loop is one); an
    unknown ``HUB_*`` variable is reported first, as it may explain an invalid one."""
    for name in unknown_env():
        log.warning("unknown setting %s (ignored)", name)
    return load_settings()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed, else None (asyncio's own).

    At low load most of a task's CPU in a replica or node is the event loop waking up for each
    NATS or gRPC message, and uvloop makes each wake-up much cheaper: K=1 latency and K=64
    throughput both gain (docs/benchmarks-log.md, sixth session).
    """
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's loop does the same work
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = None if args.command in CLIENT_COMMANDS else _settings()
        loop = settings.event_loop if settings is not None else "uvloop"
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            code = runner.run(_run(args, settings))
    except KeyboardInterrupt:
        code = EXIT_OK
    except CliError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        code = exc.code
    except ClientError as exc:
        print(f"hub: {exc.message} ({exc.code})", file=sys.stderr)
        code = EXIT_FOR_CODE.get(exc.code, EXIT_ERROR)
    except InvalidSettings as exc:
        print(f"hub: invalid settings: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except (Unavailable, ServerFailed) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        code = EXIT_UNAVAILABLE
    except HubError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    raise SystemExit(code)


if __name__ == "__main__":
    main()
