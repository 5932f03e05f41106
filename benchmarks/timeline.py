"""Where one task's latency goes: the hub at K=1, each step of the path timed in every process.

`e2e.py --inflight 1` says how long an unloaded task takes (goal P3); this says where the time
goes. It runs the same rig (embedded nats-server, one replica, M echo nodes, this process as the
agent) with the replica and the nodes started through `_stamps.py`, which notes a reading of
the machine's monotonic clock as each step begins. One task at a time; each task's stamps are
matched to PATH in order (the first stamp of each step after the step before it), and the time
up to each step is either a **hop** (waiting for another process or the server: the message's
trip both ways, the other side's work and every wake-up on the way) or **work** (one process,
from what it read to what it sends next).

    agent -> replica: record create, task publish (NATS) ... doorbell -> pull -> claim (NATS)
      -> node -> replica: result (NATS) ... journal echo -> agent

Reports, per step, the median over tasks of the time since the step before, the sums of the
hop and work medians, and the median latency; medians over `--reps` (fresh servers each).

    python benchmarks/timeline.py --tasks 1000 --sync 1s --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stamps
from _common import (
    add_rep_flags,
    emit_json,
    median,
    nats_server_version,
    note,
    percentile,
    progress,
    run_async,
)
from _hub import HubRig, hub_params

AGENT_SENDS, AGENT_DONE = "agent: → submit", "agent: result"

#: (stamp, what it marks, whether the time up to it is a hop or work), in the path's order.
PATH: tuple[tuple[str, str, str], ...] = (
    (AGENT_SENDS, "agent writes the submit", "work"),
    ("replica: submit read", "replica reads it", "hop"),
    ("replica: → journal write", "record create sent", "work"),
    ("replica: ← journal write answered", "record create answered", "hop"),
    ("replica: → task publish", "task publish sent", "work"),
    ("replica: ← doorbell", "doorbell heard", "hop"),
    ("replica: → pull", "pull sent", "work"),
    ("replica: ← task message", "task message delivered", "hop"),
    ("replica: claim", "claim begins", "work"),
    ("replica: → journal write", "claim sent", "work"),
    ("replica: ← journal write answered", "claim answered", "hop"),
    ("replica: → node grant", "grant sent", "work"),
    ("node: ← grant", "node reads the grant", "hop"),
    ("node: → result", "node sends the result", "work"),
    ("replica: ← node result", "replica reads the result", "hop"),
    ("replica: → journal write", "result sent", "work"),
    ("replica: ← journal echo", "result's echo heard", "hop"),
    ("replica: → agent reply", "reply built", "work"),
    (AGENT_DONE, "agent has the result", "hop"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000, help="measured tasks per rep (one at a time)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured tasks before each rep")
    p.add_argument("--nodes", type=int, default=2, help="node processes (M)")
    p.add_argument("--payload-bytes", type=int, default=256, help="task payload size")
    add_rep_flags(p)
    return p.parse_args(argv)


def match(stamps: Sequence[tuple[int, str]], t0: int) -> list[int] | None:
    """Each PATH step's time since the one before (ns) for the task that began at ``t0``, or
    None if a step is missing. ``stamps`` are this task's, sorted, the last one AGENT_DONE."""
    out, at, i = [], t0, 0
    for step, _, _ in PATH:
        while i < len(stamps) and (stamps[i][1] != step or stamps[i][0] < at):
            i += 1
        if i == len(stamps):
            return None
        out.append(stamps[i][0] - at)
        at = stamps[i][0]
        i += 1
    return out


def per_task(stamps: list[tuple[int, str]], spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Every task's step times; a task whose stamps do not all match (rare) is left out."""
    stamps.sort()
    rows, i = [], 0
    for t0, t1 in spans:
        while i < len(stamps) and stamps[i][0] < t0:
            i += 1
        j = i
        while j < len(stamps) and stamps[j][0] <= t1:
            j += 1
        row = match([*stamps[i:j], (t1, AGENT_DONE)], t0)
        if row is not None:
            rows.append(row)
    return rows


def collect(stamp_dir: Path) -> list[tuple[int, str]]:
    """This process's stamps and those the rig's processes wrote as they exited."""
    stamps = [(t, s) for t, s in _stamps.taken]
    for path in stamp_dir.glob("*.json"):
        stamps += [(t, s) for t, s in json.loads(path.read_text())]
        path.unlink()
    return stamps


async def run_rep(args: argparse.Namespace, rep: int, stamp_dir: Path) -> dict[str, Any]:
    """One rep: its tasks' spans and every process's stamps, reduced to per-step medians."""
    payload = b"x" * args.payload_bytes
    os.environ[_stamps.STAMPS_ENV] = str(stamp_dir)
    spans: list[tuple[int, int]] = []
    async with HubRig(nodes=args.nodes, sync=args.sync, loop=args.loop, module="_stamps") as rig:
        client = rig.clients[0]
        for _ in range(args.warmup):
            await client.submit("echo", payload, wait_s=60.0)
        _stamps.taken.clear()
        with progress(args.tasks, f"timeline rep {rep + 1}/{args.reps}") as bar:
            for _ in range(args.tasks):
                t0 = time.monotonic_ns()
                done = await client.submit("echo", payload, wait_s=60.0)
                spans.append((t0, time.monotonic_ns()))
                if not done.done or done.task.result != payload:
                    raise RuntimeError(f"task {done.task.task_id} not done right")
                bar.advance()
    rows = per_task(collect(stamp_dir), spans)
    if not rows:
        raise RuntimeError("no task's stamps matched the path")
    steps = [median([r[k] / 1e3 for r in rows]) for k in range(len(PATH))]
    latency = median([(t1 - t0) / 1e3 for t0, t1 in spans])
    note(f"rep {rep + 1}: p50 {latency:.0f} us, {len(rows)}/{len(spans)} tasks matched the path")
    return {
        "p50_us": latency,
        "steps_us": steps,
        "matched": len(rows) / len(spans),
        "tail_excess_us": tail_excess(rows, steps),
    }


def tail_excess(rows: Sequence[Sequence[int]], steps_us: Sequence[float]) -> list[float]:
    """Where the slowest tasks lose their time: over the tasks at or above the p99 (a row's
    steps add up to its latency), each step's mean excess over that step's median. The
    excesses add up to how much longer than the medians' sum those tasks took."""
    cut = percentile([sum(r) for r in rows], 99)
    tail = [r for r in rows if sum(r) >= cut]
    return [sum(r[k] / 1e3 - steps_us[k] for r in tail) / len(tail) for k in range(len(PATH))]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    _stamps.install()  # this process is the agent
    reps = []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="bench-stamps-") as stamp_dir:
            reps.append(await run_rep(args, rep, Path(stamp_dir)))
    return reps


def summarize(args: argparse.Namespace, reps: list[dict[str, Any]], loop: str) -> dict[str, Any]:
    steps = [round(median([r["steps_us"][k] for r in reps]), 1) for k in range(len(PATH))]
    tail = [round(median([r["tail_excess_us"][k] for r in reps]), 1) for k in range(len(PATH))]
    total = {
        kind: round(sum(us for us, (_, _, k) in zip(steps, PATH, strict=True) if k == kind), 1)
        for kind in ("hop", "work")
    }
    return {
        "bench": "timeline",
        "sync": args.sync,
        "tasks": args.tasks,
        "inflight": 1,
        "reps": args.reps,
        "nodes": args.nodes,
        "payload_bytes": args.payload_bytes,
        "loop": loop,
        **hub_params(),
        "nats_server": nats_server_version(),
        "p50_ms": round(median([r["p50_us"] for r in reps]) / 1e3, 3),
        "hop_us": total["hop"],
        "work_us": total["work"],
        "hops": sum(kind == "hop" for _, _, kind in PATH),
        "steps": [
            {"step": what, "kind": kind, "us": us, "tail_excess_us": excess}
            for (_, what, kind), us, excess in zip(PATH, steps, tail, strict=True)
        ],
        "raw": {
            k: [r[k] for r in reps] for k in ("p50_us", "matched", "steps_us", "tail_excess_us")
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_async(run(args), args.loop)
    result = summarize(args, reps, loop)
    note("  median  slowest 1 %: excess")
    for step in result["steps"]:
        note(
            f"{step['us']:8.0f} {step['tail_excess_us']:+8.0f} us  {step['kind']:4}  {step['step']}"
        )
    hops, work = result["hop_us"], result["work_us"]
    note(f"hops {hops:.0f} us + work {work:.0f} us; p50 {result['p50_ms']} ms")
    emit_json(result)


if __name__ == "__main__":
    main()
