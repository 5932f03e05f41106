"""Compare two py-spy profiles (`--profile DIR` of `e2e.py` or `backlog.py`) function by function.

Prints each function's share of the samples in both, the largest growth first and then the
largest shrink, and ends with one JSON line like every benchmark. Shares, not sample counts,
because two measured windows rarely hold the same number of samples; a share that grows in
the second profile is where its extra time per task went, if its CPU per task was higher.

    python benchmarks/profile_diff.py prof/rep1-small-replica.txt prof/rep1-large-replica.txt
    python benchmarks/profile_diff.py A.txt B.txt --inclusive --top 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, note
from _profile import compare, parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("before", type=Path, help="py-spy raw profile")
    p.add_argument("after", type=Path, help="py-spy raw profile to compare with it")
    p.add_argument("--inclusive", action="store_true", help="a function's whole stack below it")
    p.add_argument("--top", type=int, default=20, help="rows of growth, and of shrink")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    before, after = parse(args.before.read_text()), parse(args.after.read_text())
    changes = compare(before, after, inclusive=args.inclusive)
    shown = changes if len(changes) <= 2 * args.top else changes[: args.top] + changes[-args.top :]
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
