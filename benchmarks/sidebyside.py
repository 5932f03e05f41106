"""Run benchmark commands alternately (A B C A B C ...) and compare their throughput per round.

On a shared, noisy machine two benchmarks run minutes apart can differ by 2x for reasons that
have nothing to do with them. Interleaving the runs and taking the ratio within each round
cancels most of that drift; the median of the per-round ratios is the figure to quote.

    python benchmarks/sidebyside.py --rounds 3 -- \\
        "raw_nats.py --tasks 5000 --inflight 64 --sync 1s --reps 1" \\
        "celery_redis.py --tasks 5000 --inflight 64 --sync 1s --reps 1"

Each spec is one shell-quoted command; a first word ending in `.py` that names a file in
benchmarks/ runs with this interpreter. Every command must print its result as the last
stdout line (JSON with `tasks_per_s`), as `_common.emit_json` does.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, last_json_line, median, note

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`--rounds R -- SPEC...`; the `--` keeps the specs' own flags away from ours."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="how many A B C ... rounds")
    p.add_argument("--timeout", type=float, default=1800.0, help="bound on one run, seconds")
    p.add_argument("specs", nargs="+", help="benchmark commands, one quoted string each")
    return p.parse_args(argv)


def resolve(spec: str) -> list[str]:
    """argv for a spec: `x.py ...` in benchmarks/ runs under this Python, anything else as is."""
    words = shlex.split(spec)
    if not words:
        raise SystemExit("error: empty spec")
    script = Path(words[0])
    if script.suffix == ".py":
        local = script if script.is_absolute() else HERE / script
        if local.exists():
            return [sys.executable, str(local), *words[1:]]
    return words


def run_one(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run one benchmark (its stderr passes through); return its result line, or an error."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}"}
    try:
        result = last_json_line(proc.stdout)
    except ValueError as exc:
        return {"error": f"no JSON result line: {exc}"}
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (a failed run)."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 4)


def main(argv: list[str] | None = None) -> int:
    """Alternate the specs for R rounds; print per-round ratios and their medians as JSON."""
    args = parse_args(argv)
    argvs = [resolve(s) for s in args.specs]
    runs: list[list[dict[str, Any]]] = [[] for _ in args.specs]
    for rnd in range(args.rounds):
        for i, (spec, cmd) in enumerate(zip(args.specs, argvs, strict=True)):
            note(f"round {rnd + 1}/{args.rounds}: {spec}")
            res = run_one(cmd, args.timeout)
            if "error" in res:
                note(f"  failed: {res['error']}")
            else:
                note(f"  {res.get('tasks_per_s')} tasks/s, p50 {res.get('p50_ms')} ms")
            runs[i].append(res)

    def series(i: int, key: str) -> list[Any]:
        return [r.get(key) for r in runs[i]]

    base = series(0, "tasks_per_s")
    specs_out = []
    for i, spec in enumerate(args.specs):
        tps = series(i, "tasks_per_s")
        per_round = [ratio(a, b) for a, b in zip(tps, base, strict=True)]
        ok = [x for x in per_round if x is not None]
        specs_out.append(
            {
                "spec": spec,
                "bench": next((r.get("bench") for r in runs[i] if "bench" in r), None),
                "sync": next((r.get("sync") for r in runs[i] if "sync" in r), None),
                "tasks_per_s": tps,
                "p50_ms": series(i, "p50_ms"),
                "p99_ms": series(i, "p99_ms"),
                "max_ms": series(i, "max_ms"),
                "cpu_us_per_task": series(i, "cpu_us_per_task"),
                "median_tasks_per_s": round(median([x for x in tps if x is not None]), 1),
                "ratio_per_round": per_round,
                "median_ratio": round(median(ok), 4) if ok else None,
                "errors": [r["error"] for r in runs[i] if "error" in r],
            }
        )
    emit_json(
        {
            "bench": "sidebyside",
            "rounds": args.rounds,
            "baseline": args.specs[0],
            "median_ratios": {s["spec"]: s["median_ratio"] for s in specs_out},
            "specs": specs_out,
        }
    )
    return 1 if any(s["errors"] for s in specs_out) else 0


if __name__ == "__main__":
    sys.exit(main())
