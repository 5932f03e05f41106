"""Smoke test of the peer benchmarks: each runs end to end on tiny numbers and ends in JSON.

The benchmarks are run rarely and by hand, so they rot silently; this keeps their contract
(a last stdout line that parses as JSON with `tasks_per_s`) true on every CI run.
"""

from __future__ import annotations

import cProfile
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.grpc.environment import GRPC_ENVIRONMENT

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--tasks", "50", "--inflight", "4", "--reps", "1", "--warmup", "10", "--sync", "1s"]


#: What a benchmark's processes run gRPC with: the hub's table unless this run sets its own.
EXPERIMENTS = os.environ.get("GRPC_EXPERIMENTS", GRPC_ENVIRONMENT["GRPC_EXPERIMENTS"])


def run_bench(argv: list[str], timeout_s: float = 100.0) -> dict[str, Any]:
    """Run a benchmark script under this interpreter; return its last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=BENCH,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout; stderr: {proc.stderr[-4000:]}"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("style", ["raw", "api"])
def test_raw_nats_ends_with_a_json_result(style: str) -> None:
    batch = ["--batch", "4"]  # api style: a fetch batch above the in-flight count waits out 0.5 s
    result = run_bench(["raw_nats.py", *TINY, "--style", style, *batch])
    assert result["bench"] == "raw_nats"
    assert result["sync"] == "1s"
    assert result["style"] == style
    assert result["tasks_per_s"] > 0
    assert result["p50_ms"] > 0
    assert result["max_ms"] >= result["p99_ms"] >= result["p50_ms"]
    assert set(result["cpu_us_per_task"]) == {"producer", "workers", "nats_server"}
    assert len(result["raw"]["tasks_per_s"]) == 1


def test_sidebyside_reports_ratios_against_the_first_spec() -> None:
    spec = "raw_nats.py " + " ".join(TINY)
    result = run_bench(["sidebyside.py", "--rounds", "1", "--", spec, spec + " --workers 1"], 200)
    assert result["bench"] == "sidebyside"
    first, second = result["specs"]
    assert first["ratio_per_round"] == [1.0]
    assert first["tasks_per_s"][0] > 0
    assert second["tasks_per_s"][0] > 0
    assert second["median_ratio"] > 0
    assert result["median_ratios"][spec] == 1.0


@pytest.mark.skipif(
    importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None,
    reason="celery/redis not installed: pip install -e '.[bench]'",
)
@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server not installed: apt-get install -y redis-server",
)
def test_celery_redis_ends_with_a_json_result() -> None:
    result = run_bench(["celery_redis.py", *TINY])
    assert result["bench"] == "celery_redis"
    assert result["sync"] == "1s"
    assert result["tasks_per_s"] > 0
    assert set(result["cpu_us_per_task"]) == {"producer", "workers", "redis_server"}


# --- the hub's own benchmarks (tiny numbers; each starts NATS, a replica and node processes) ---


@pytest.mark.parametrize("shards", [1, 3])
def test_e2e_ends_with_a_json_result(shards: int) -> None:
    """(It fails unless the replicas made the journal with the shards asked for.)"""
    result = run_bench(["e2e.py", *TINY, "--journal-shards", str(shards)])
    assert result["bench"] == "e2e"
    assert result["journal_shards"] == shards
    assert result["sync"] == "1s"
    assert result["tasks_per_s"] > 0
    assert result["max_ms"] >= result["p99_ms"] >= result["p50_ms"] > 0
    assert set(result["cpu_us_per_task"]) == {"agent", "replicas", "nodes", "nats_server"}
    assert result["grpc_experiments"] == EXPERIMENTS


def test_journal_appends_keeps_head_and_tail_exact() -> None:
    result = run_bench(["journal_appends.py", "--tasks", "4", "--seconds", "0.2", "--reps", "1"])
    assert result["bench"] == "journal_appends"
    assert result["appends_per_s"] > 0
    assert result["head_tail_exact"] == 1.0


def test_replica_rss_ends_with_a_json_result() -> None:
    argv = ["replica_rss.py", "--tasks", "8", "--bytes", "100000", "--hold", "0.2", "--nodes", "2"]
    result = run_bench(argv)
    assert result["bench"] == "replica_rss"
    assert result["succeeded"] == 8
    assert result["peak_rss_mb"] > 0


@pytest.mark.parametrize("hold", [False, True])
def test_backlog_ends_with_a_json_result(hold: bool) -> None:
    flags = ["--hold"] * hold
    result = run_bench(["backlog.py", "--small", "20", "--large", "60", "--measure", "40", *flags])
    assert result["bench"] == "backlog"
    assert result["hold"] is hold
    assert result["small_tasks_per_s"] > 0
    assert result["large_tasks_per_s"] > 0


def test_backlog_diagnostics_ballast_and_same_history() -> None:
    """The small side stores the ballast (sized from the hub's own stored task and record) and
    first takes the large side's extra submits, purged: a wrong stream or bucket name, or a
    purge that left them queued (the script checks the queue holds its backlog), fails it."""
    argv = ["backlog.py", "--small", "20", "--large", "60", "--measure", "20"]
    result = run_bench([*argv, "--ballast", "300", "--same-history"])
    assert result["ballast"] == 300
    assert result["same_history"] is True
    assert result["small_tasks_per_s"] > 0
    assert result["large_tasks_per_s"] > 0


# --- profiles of the measured window ---------------------------------------------------------


def test_profile_diff_compares_each_functions_share(tmp_path: Path) -> None:
    """Shares of each profile's own samples, one row per function whatever its line, the
    largest growth first; inclusive shares count a function anywhere in the stack."""
    before, after = tmp_path / "before.txt", tmp_path / "after.txt"
    before.write_text(
        "main (run.py:1);claim (pool.py:10) 3\nmain (run.py:1);decode (model.py:5) 1\n"
    )
    after.write_text(
        "main (run.py:1);claim (pool.py:12) 2\nmain (run.py:2);decode (model.py:5) 6\nnot a line\n"
    )
    result = run_bench(["profile_diff.py", str(before), str(after)])
    assert result["samples"] == [4, 8]
    rows = [(r["function"], r["before"], r["after"]) for r in result["rows"]]
    assert rows == [("decode (model.py)", 0.25, 0.75), ("claim (pool.py)", 0.75, 0.25)]
    inclusive = run_bench(["profile_diff.py", str(before), str(after), "--inclusive"])
    assert ("main (run.py)", 1.0, 1.0) in [
        (r["function"], r["before"], r["after"]) for r in inclusive["rows"]
    ]


def _py_spy_samples() -> bool:
    """Whether py-spy is installed and may read another process (root, or ptrace allowed)."""
    local = Path(sys.executable).parent / "py-spy"
    py_spy = str(local) if local.exists() else shutil.which("py-spy")
    if py_spy is None:
        return False
    argv = [py_spy, "dump", "--nonblocking", "--pid", str(os.getpid())]
    return subprocess.run(argv, capture_output=True, timeout=60).returncode == 0


needs_py_spy = pytest.mark.skipif(
    not _py_spy_samples(), reason="py-spy not installed (pip install -e '.[dev]') or not allowed"
)


@needs_py_spy
def test_e2e_profile_samples_each_hub_process(tmp_path: Path) -> None:
    """`--profile` leaves one py-spy file per process, and the replica's holds samples of the
    hub's own code taken while the tasks ran."""
    result = run_bench(["e2e.py", *TINY, "--tasks", "300", "--profile", str(tmp_path)])
    assert result["profile"] == str(tmp_path)
    files = sorted(p.name for p in (tmp_path / "rep1").iterdir())
    assert files == ["agent.txt", "node0.txt", "node1.txt", "replica0.txt"]
    replica = (tmp_path / "rep1" / "replica0.txt").read_text()
    assert "hub/pool.py" in replica


@needs_py_spy
def test_backlog_profile_samples_each_side(tmp_path: Path) -> None:
    argv = ["backlog.py", "--small", "20", "--large", "60", "--measure", "40", "--hold"]
    result = run_bench([*argv, "--profile", str(tmp_path)])
    assert result["profile"] == str(tmp_path)
    for side in ("small", "large"):
        assert sorted(p.name for p in (tmp_path / f"rep1-{side}").iterdir()) == [
            "agent.txt",
            "replica0.txt",
        ]


def _counted(out_dir: Path, tasks: int, steps_per_task: int) -> Path:
    """A real cProfile count of ``tasks`` tasks of ``steps_per_task`` calls each, laid out as
    `--cprofile` leaves one."""

    def step() -> None:
        return None

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(tasks * steps_per_task):
        step()
    profile.disable()
    out_dir.mkdir()
    profile.dump_stats(out_dir / "replica0.prof")
    (out_dir / "window.json").write_text(json.dumps({"tasks": tasks}))
    return out_dir / "replica0.prof"


def test_profile_diff_compares_calls_per_task(tmp_path: Path) -> None:
    """Two counted windows side by side per task, whatever their task counts."""
    before = _counted(tmp_path / "before", tasks=10, steps_per_task=2)
    after = _counted(tmp_path / "after", tasks=20, steps_per_task=3)
    result = run_bench(["profile_diff.py", str(before), str(after)])
    assert result["per"] == "task"
    assert result["tasks"] == [10, 20]
    [step] = [r for r in result["rows"] if r["function"].startswith("step (")]
    assert step["calls"] == [2.0, 3.0]
    mixed = subprocess.run(
        [sys.executable, "profile_diff.py", str(before), str(tmp_path / "py-spy.txt")],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mixed.returncode == 2 and "not one of each" in mixed.stderr


def _calls_per_task(prof: Path, function: str) -> float:
    """Calls per task of one hub function in a counted window, read through profile_diff."""
    rows = run_bench(["profile_diff.py", str(prof), str(prof), "--top", "1000"])["rows"]
    return sum(r["calls"][0] for r in rows if r["function"].startswith(function))


def test_e2e_counts_the_calls_of_each_hub_process(tmp_path: Path) -> None:
    """`--cprofile` leaves one count per replica and node, over the tasks of the window: every
    task was claimed by the replica (a coroutine counts its call and each resume) and started
    by a node."""
    result = run_bench(["e2e.py", *TINY, "--tasks", "100", "--cprofile", str(tmp_path)])
    assert result["cprofile"] == str(tmp_path)
    rep = tmp_path / "rep1"
    files = sorted(p.name for p in rep.iterdir())
    assert files == ["node0.prof", "node1.prof", "replica0.prof", "window.json"]
    assert json.loads((rep / "window.json").read_text()) == {"tasks": 100}
    assert _calls_per_task(rep / "replica0.prof", "claim (hub/pool.py:") >= 1.0
    started = [_calls_per_task(rep / f"node{i}.prof", "_start (hub/node.py:") for i in (0, 1)]
    assert sum(started) == pytest.approx(1.0)


def test_backlog_counts_each_side(tmp_path: Path) -> None:
    argv = ["backlog.py", "--small", "20", "--large", "60", "--measure", "40", "--hold"]
    result = run_bench([*argv, "--cprofile", str(tmp_path)])
    assert result["cprofile"] == str(tmp_path)
    for side in ("small", "large"):
        counted = tmp_path / f"rep1-{side}"
        assert sorted(p.name for p in counted.iterdir()) == ["replica0.prof", "window.json"]
        assert json.loads((counted / "window.json").read_text())["tasks"] >= 40
        assert _calls_per_task(counted / "replica0.prof", "claim (hub/pool.py:") > 0


def test_floors_ends_with_a_json_result() -> None:
    result = run_bench(["floors.py", "--ops", "20", "--warmup", "5", "--reps", "1"])
    assert result["bench"] == "floors"
    for step in ("js_publish", "js_pull", "grpc_rtt", "grpc_stream_rtt"):
        assert result[f"{step}_p99_us"] >= result[f"{step}_p50_us"] > 0


def test_batched_writes_ends_with_a_json_result() -> None:
    result = run_bench(["batched_writes.py", "--writes", "8", "--rounds", "5", "--warmup", "1"])
    assert result["bench"] == "batched_writes"
    for way in ("single", "atomic"):  # (CPU is read in clock ticks: a tiny run may show 0)
        assert result[f"{way}_client_us"] >= 0 and result[f"{way}_server_us"] >= 0
        assert result[f"{way}_wall_us"] > 0


@pytest.mark.parametrize("shards", [1, 3])
def test_store_floor_ends_with_a_json_result(shards: int) -> None:
    """(With shards, its check that every record was written counts them over the buckets.)"""
    result = run_bench(["store_floor.py", *TINY, "--writes", "40", "--journal-shards", str(shards)])
    assert result["bench"] == "store_floor"
    assert result["journal_shards"] == shards
    assert result["tasks_per_s"] > 0
    assert result["max_ms"] >= result["p99_ms"] >= result["p50_ms"] > 0
    assert set(result["cpu_us_per_task"]) == {"client", "nats_server"}
    for measure in ("stream_writes_per_s", "two_streams_writes_per_s"):
        assert result[measure] > 0
        assert result["raw"][measure] == [result[measure]]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_bare_path_ends_with_a_json_result(loop: str) -> None:
    result = run_bench(["bare_path.py", *TINY, "--loop", loop])
    assert result["bench"] == "bare_path"
    assert result["loop"] == loop
    assert result["tasks_per_s"] > 0
    assert result["max_ms"] >= result["p99_ms"] >= result["p50_ms"] > 0
    assert set(result["cpu_us_per_task"]) == {"agent", "relay", "node", "nats_server"}
    assert result["grpc_experiments"] == EXPERIMENTS


@pytest.mark.parametrize(
    ("kind", "busy", "pulls"),
    [
        ("rescan", False, 0),  # an empty pool: no route holds a message
        ("rescan", True, 0),  # each node's route holds only the task that node runs
        ("rung", False, 1),  # the rung route, once
        ("idle", True, 0),
    ],
)
def test_rescan_ends_with_a_json_result(kind: str, busy: bool, pulls: int) -> None:
    argv = ["rescan.py", "--nodes", "3", "--rounds", "2", "--reps", "1", "--round", kind]
    result = run_bench(argv + ["--busy"] * busy)
    assert result["bench"] == "rescan" and result["nodes"] == 3
    assert result["round"] == kind and result["busy"] is busy
    assert result["round_us"] > 0
    assert result["pulls_per_round"] == pulls


def test_timeline_matches_every_step_of_the_path() -> None:
    argv = ["timeline.py", "--tasks", "20", "--warmup", "5", "--reps", "1", "--nodes", "1"]
    result = run_bench(argv)
    assert result["bench"] == "timeline"
    # (a hub function renamed fails the replica's start; a pull that a periodic rescan sent
    # before the doorbell rang leaves that one task unmatched)
    assert result["raw"]["matched"][0] >= 0.9
    assert [s["kind"] for s in result["steps"]].count("hop") == result["hops"] == 9
    assert all(s["us"] > 0 for s in result["steps"])
    assert result["hop_us"] + result["work_us"] == pytest.approx(
        sum(s["us"] for s in result["steps"]), abs=0.5
    )
    assert all("tail_excess_us" in s for s in result["steps"])


@pytest.fixture
def timeline(monkeypatch: pytest.MonkeyPatch) -> Any:
    """benchmarks/timeline.py, imported here. Its `_common` sets gRPC's variables for the
    processes a benchmark starts; monkeypatch puts the test run's own back afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name, value in GRPC_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    import timeline

    return timeline


def test_timeline_puts_the_tails_time_on_the_step_that_took_it(timeline: Any) -> None:
    n = len(timeline.PATH)
    rows = [[1000] * n for _ in range(99)]
    rows.append([1000] * 3 + [5000] + [1000] * (n - 4))  # one slow task, slow at step 3
    rows.append([3000] + [1000] * (n - 1))  # and one slow at step 0
    medians = [1.0] * n  # µs, as run_rep computes them (rows are in ns)
    excess = timeline.tail_excess(rows, medians)
    assert excess[3] == pytest.approx(2.0) and excess[0] == pytest.approx(1.0)
    assert sum(excess) == pytest.approx(3.0)  # the two tail tasks' mean extra: (4 + 2) / 2


def test_timeline_matches_each_step_after_the_one_before(timeline: Any) -> None:
    """The tail of the task before (its ack answered, its doorbell round) lands in the next
    task's window: each step is the first of its kind after the step before, not the first."""
    steps = [step for step, _, _ in timeline.PATH]
    tail = [(5, "replica: ← journal write answered"), (6, "replica: → pull")]
    stamps = sorted([*tail, *((10 * (k + 1), step) for k, step in enumerate(steps[:-1]))])
    rows = timeline.per_task(stamps, [(1, 10 * len(steps))])
    assert rows == [[9] + [10] * (len(steps) - 1)]
    assert timeline.per_task(stamps[:-2], [(1, 10 * len(steps))]) == []  # a step missing
