"""Settings: defaults, environment, validation that names the HUB_* variable, unknown names."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from hub.cli import GC_THRESHOLD, loop_factory, settle_gc
from hub.config import Settings, load_settings, unknown_env
from hub.errors import InvalidSettings
from hub.nats.server import render_config


def test_defaults_replace_the_old_hard_coded_limits() -> None:
    s = Settings()
    assert s.task_ttl_s == 3600.0
    assert s.result_ttl_s >= 3600.0  # hours, not the old 120 s
    assert 30_000 <= s.journal_head_bytes + s.journal_tail_bytes <= 50_000  # about 40 KB
    assert s.nats_sync == "always"
    assert s.embedded and s.nats_urls == []
    assert s.stream_replicas == 1


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("HUB_ACK_WAIT_S", "12.5")
    monkeypatch.setenv("HUB_RETRY_BACKOFF_S", "[1, 2, 4]")
    monkeypatch.setenv("HUB_NATS_SYNC", "1s")
    s = load_settings()
    assert s.nats_urls == ["nats://a:4222", "nats://b:4222"] and not s.embedded
    assert s.ack_wait_s == 12.5 and s.nats_sync == "1s"
    assert s.retry_backoff_s == (1.0, 2.0, 4.0)
    assert [s.backoff_for(n) for n in (0, 1, 2, 3, 9)] == [1.0, 1.0, 2.0, 4.0, 4.0]
    assert load_settings(ack_wait_s=30).ack_wait_s == 30  # overrides win


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        Settings().ack_wait_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"ack_wait_s": 0}, "HUB_ACK_WAIT_S"),
        ({"ack_wait_s": "soon"}, "HUB_ACK_WAIT_S"),
        ({"max_attempts": 0}, "HUB_MAX_ATTEMPTS"),
        ({"nats_sync": "sometimes"}, "HUB_NATS_SYNC"),
        ({"nats_port": 70000}, "HUB_NATS_PORT"),
        ({"retry_backoff_s": ()}, "HUB_RETRY_BACKOFF_S"),
        ({"retry_backoff_s": (1, -1)}, "HUB_RETRY_BACKOFF_S"),
        ({"result_ttl_s": 0.5}, "HUB_RESULT_TTL_S"),
        ({"max_payload_bytes": 10}, "HUB_MAX_PAYLOAD_BYTES"),
        ({"starvation_limit": 0}, "HUB_STARVATION_LIMIT"),
        ({"heartbeat_s": 10, "ack_wait_s": 5}, "HUB_HEARTBEAT_S"),
        ({"journal_head_bytes": 0, "journal_tail_bytes": 0}, "HUB_JOURNAL_HEAD_BYTES"),
        ({"event_loop": "trio"}, "HUB_EVENT_LOOP"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict, named: str) -> None:
    with pytest.raises(InvalidSettings, match=named):
        load_settings(**overrides)


def test_invalid_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TASK_TTL_S", "-5")
    monkeypatch.setenv("HUB_NATS_SYNC", "never")
    with pytest.raises(InvalidSettings) as info:
        load_settings()
    assert "HUB_TASK_TTL_S" in str(info.value) and "HUB_NATS_SYNC" in str(info.value)


def test_unknown_env_reports_typos_only() -> None:
    environ = {
        "HUB_ACK_WAIT_S": "1",
        "HUB_ACKWAIT": "1",
        "HUB_TOKEN": "secret",  # read by the CLI client
        "HUB_ADDR": "x",
        "HUB_DATA_DIRR": "/tmp",
        "PATH": "/bin",
        "hub_lower": "x",
    }
    assert unknown_env(environ) == ["HUB_ACKWAIT", "HUB_DATA_DIRR"]


def test_unknown_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_NOT_A_SETTING", "1")
    assert unknown_env() == ["HUB_NOT_A_SETTING"]


def test_journal_values_fit_the_largest_buffer() -> None:
    s = Settings(journal_head_bytes=1000, journal_tail_bytes=2000, max_payload_bytes=1024)
    assert s.journal_value_bytes >= 6 * 3000


def test_render_config_sets_listen_store_and_sync(tmp_path: Path) -> None:
    template = (Path(__file__).parents[2] / "nats-server.conf").read_text()
    out = render_config(template, port=0, store_dir=tmp_path / "s", sync="1s")
    assert "listen: 127.0.0.1:-1" in out
    assert f'store_dir: "{tmp_path / "s"}"' in out
    assert "sync_interval: 1s" in out
    out = render_config(template, port=4333, store_dir=tmp_path, sync="always", extra="# x")
    assert "listen: 127.0.0.1:4333" in out and "sync_interval: always" in out
    assert out.endswith("\n# x")


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert load_settings().event_loop == "uvloop"
    factory = loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert loop_factory("asyncio") is None


def test_without_uvloop_the_hub_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import on a platform without it sees
    assert loop_factory("uvloop") is None


def test_a_started_process_freezes_what_is_alive_and_collects_less_often() -> None:
    before = gc.get_threshold()
    alive = object.__new__(type("Alive", (), {}))  # a tracked object alive at the start
    try:
        settle_gc()
        assert gc.get_threshold() == GC_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects())  # frozen: never walked again
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
