"""Compare two profiles of `e2e.py` or `backlog.py` windows function by function.

Two py-spy profiles (`--profile DIR`, `.txt`): each function's share of the samples in both.
Shares, not sample counts, because two measured windows rarely hold the same number of
samples; a share that grows in the second profile is where its extra time per task went, if
its CPU per task was higher.

Two cProfile counts (`--cprofile DIR`, `.prof`): each function's calls and own time per task
in both, exact for calls (a call more per task is a real change in what the hub does), and
for times only comparable with each other (cProfile about doubles them).

Either way it prints the largest growth first and then the largest shrink, and ends with one
JSON line like every benchmark.

    python benchmarks/profile_diff.py prof/rep1-small/replica0.txt prof/rep1-large/replica0.txt
    python benchmarks/profile_diff.py A.txt B.txt --inclusive --top 30
    python benchmarks/profile_diff.py n/rep1-small/replica0.prof n/rep1-large/replica0.prof
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, note
from _profile import compare, compare_calls, load_calls, parse

_Row = TypeVar("_Row")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("before", type=Path, help="py-spy raw profile (.txt) or cProfile count (.prof)")
    p.add_argument("after", type=Path, help="a profile of the same kind to compare with it")
    p.add_argument(
        "--inclusive", action="store_true", help="a function's whole stack below it (py-spy)"
    )
    p.add_argument("--top", type=int, default=20, help="rows of growth, and of shrink")
    args = p.parse_args(argv)
    if (args.before.suffix == ".prof") != (args.after.suffix == ".prof"):
        p.error("compare two cProfile counts (.prof) or two py-spy profiles, not one of each")
    return args


def _shown(rows: list[_Row], top: int) -> list[_Row]:
    return rows if len(rows) <= 2 * top else rows[:top] + rows[-top:]


def calls_per_task(args: argparse.Namespace) -> None:
    before, after = load_calls(args.before), load_calls(args.after)
    shown = _shown(compare_calls(before, after), args.top)
    note(f"per task: {before.tasks} tasks before, {after.tasks} after (own time under cProfile)")
    note(f"{'calls':>7} {'calls':>7} {'own µs':>7} {'own µs':>7} {'change':>7}  function")
    for c in shown:
        note(
            f"{c.calls[0]:7.2f} {c.calls[1]:7.2f} {c.own_us[0]:7.1f} {c.own_us[1]:7.1f}"
            f" {c.delta:+7.1f}  {c.function}"
        )
    emit_json(
        {
            "bench": "profile_diff",
            "per": "task",
            "tasks": [before.tasks, after.tasks],
            "own_us": [round(before.own_us_per_task, 1), round(after.own_us_per_task, 1)],
            "rows": [
                {
                    "function": c.function,
                    "calls": [round(n, 3) for n in c.calls],
                    "own_us": [round(us, 2) for us in c.own_us],
                }
                for c in shown
            ],
        }
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.before.suffix == ".prof":
        calls_per_task(args)
        return
    before, after = parse(args.before.read_text()), parse(args.after.read_text())
    changes = compare(before, after, inclusive=args.inclusive)
    shown = _shown(changes, args.top)
    kind = "inclusive" if args.inclusive else "self"
    note(f"{kind} share of samples: {before.samples} before, {after.samples} after")
    note(f"{'before':>7} {'after':>7} {'change':>7}  function")
    for c in shown:
        note(f"{c.before:7.2%} {c.after:7.2%} {c.delta:+7.2%}  {c.function}")
    emit_json(
        {
            "bench": "profile_diff",
            "share": kind,
            "samples": [before.samples, after.samples],
            "rows": [
                {"function": c.function, "before": round(c.before, 5), "after": round(c.after, 5)}
                for c in shown
            ],
        }
    )


if __name__ == "__main__":
    main()
