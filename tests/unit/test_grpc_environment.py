"""gRPC's variables for the hub's own processes: set where missing, never over yours."""

from __future__ import annotations

import importlib
import os

import pytest

from hub.grpc.environment import GRPC_ENVIRONMENT, apply


def test_apply_sets_what_is_missing_and_keeps_what_is_set() -> None:
    environ = {"GRPC_EXPERIMENTS": "", "PATH": "/bin"}
    apply(environ)
    assert environ["GRPC_EXPERIMENTS"] == ""  # an empty value is a choice too: gRPC's defaults
    assert environ["GRPC_ENABLE_FORK_SUPPORT"] == GRPC_ENVIRONMENT["GRPC_ENABLE_FORK_SUPPORT"]
    assert environ["PATH"] == "/bin"
    assert set(environ) == {*GRPC_ENVIRONMENT, "PATH"}


def test_apply_refuses_to_set_what_an_imported_grpc_has_already_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    importlib.import_module("grpc")  # (read its settings: from here on they are fixed)
    for name in GRPC_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="grpc was imported before"):
        apply()
    assert not set(GRPC_ENVIRONMENT) & set(os.environ)  # nothing set that would mislead

    for name, value in GRPC_ENVIRONMENT.items():  # set at the start: gRPC read these
        monkeypatch.setenv(name, value)
    apply()
