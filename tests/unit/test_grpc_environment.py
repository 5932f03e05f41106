"""gRPC's variables for the hub's own processes: set where missing, never over yours."""

from __future__ import annotations

from hub.grpc.environment import GRPC_ENVIRONMENT, apply


def test_apply_sets_what_is_missing_and_keeps_what_is_set() -> None:
    environ = {"GRPC_EXPERIMENTS": "", "PATH": "/bin"}
    apply(environ)
    assert environ["GRPC_EXPERIMENTS"] == ""  # an empty value is a choice too: gRPC's defaults
    assert environ["GRPC_ENABLE_FORK_SUPPORT"] == GRPC_ENVIRONMENT["GRPC_ENABLE_FORK_SUPPORT"]
    assert environ["PATH"] == "/bin"
    assert set(environ) == {*GRPC_ENVIRONMENT, "PATH"}
