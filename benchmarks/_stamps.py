"""Step stamps for `timeline.py`: a hub command with each step of a task's path timed.

`python -m _stamps serve` (or `node ...`) runs `python -m hub ...` after wrapping the hub
functions that begin each step of a task's path, so that each call first notes the step with
`time.monotonic_ns()` (one clock for every process on the machine). The hub's own code carries
no tracing: the wrapping happens here, at start-up, and a function that was renamed fails the
start (AttributeError) instead of going silently unmeasured. At exit the stamps are written to
`$BENCH_STAMPS/<pid>.json` as `[[ns, step], ...]`.

A wrapped call costs about 0.35 µs more on the project's machine; a task makes about 25 of
them over all its processes, under 10 µs beside its 3 ms.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAMPS_ENV = "BENCH_STAMPS"  # (not HUB_*: the rig drops those from its children)

taken: list[tuple[int, str]] = []


def stamp(step: str) -> None:
    taken.append((time.monotonic_ns(), step))


def nats_step(subject: str) -> str:
    """What a replica's NATS request is, from its subject."""
    if subject.startswith("$KV."):
        return "journal write"
    if subject.startswith("$JS.ACK."):
        return "ack"
    if subject.startswith("hub.tasks."):
        return "task publish"
    return subject.split(".", 1)[0]


def wrap(
    owner: Any, name: str, step: Callable[..., str], done: Callable[..., str] | None = None
) -> None:
    """Make ``owner.name`` stamp ``step(*its arguments)`` as it is called (and a coroutine
    function ``done(*its arguments)`` as its caller resumes with the answer)."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def stamped_async(*args: Any, **kwargs: Any) -> Any:
            stamp(step(*args, **kwargs))
            result = await original(*args, **kwargs)
            if done is not None:
                stamp(done(*args, **kwargs))
            return result

        setattr(owner, name, stamped_async)
    else:

        @functools.wraps(original)
        def stamped(*args: Any, **kwargs: Any) -> Any:
            stamp(step(*args, **kwargs))
            return original(*args, **kwargs)

        setattr(owner, name, stamped)


def named(step: str) -> Callable[..., str]:
    return lambda *args, **kwargs: step


def install() -> None:
    """Wrap the steps of the agent's, the replica's and the node's path (each process runs
    only its own)."""
    from hub import client, journal, node, nodes, pool, queue
    from hub.grpc import node_service, task_service
    from hub.nats import requests

    wrap(client, "messages", named("agent: → submit"))
    wrap(task_service.TaskService, "_submit", named("replica: submit read"))
    wrap(
        requests.Requests,
        "request",
        lambda _, subject, *a, **k: f"replica: → {nats_step(subject)}",
        lambda _, subject, *a, **k: f"replica: ← {nats_step(subject)} answered",
    )
    wrap(journal.Journal, "_on_record", named("replica: ← journal echo"))
    wrap(pool.Pool, "_ring", named("replica: ← doorbell"))
    wrap(queue._Puller, "pull", named("replica: → pull"))
    wrap(queue._Puller, "_on_msg", named("replica: ← task message"))
    wrap(nodes.Nodes, "_grant", named("replica: claim"))
    wrap(node_service, "_notice_to_pb", lambda notice: f"replica: → node {notice.kind}")
    wrap(node_service.NodeService, "_result", named("replica: ← node result"))
    wrap(task_service, "record_to_pb", named("replica: → agent reply"))
    wrap(node.Node, "_start", named("node: ← grant"))
    wrap(node.Node, "_send", lambda _, message: f"node: → {message.WhichOneof('msg')}")


def dump(directory: Path) -> None:
    (directory / f"{os.getpid()}.json").write_text(json.dumps(taken))


def main() -> None:
    # (GRPC_ENABLE_FORK_SUPPORT comes from the benchmark's environment, as for `python -m hub`)
    install()
    atexit.register(dump, Path(os.environ[STAMPS_ENV]))
    from hub.__main__ import main as hub_main

    hub_main()


if __name__ == "__main__":
    main()
