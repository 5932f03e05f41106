"""How gRPC runs in the processes the hub starts. gRPC reads these settings once, when it is
imported, so they are environment variables set before anything imports grpc: ``hub.__main__``
applies them first thing (children inherit them), and so do the benchmarks. A value already in
the environment wins, so an operator can set either one back.

A program of yours that runs an agent or a node with the SDKs gains the same by exporting
these variables before it starts, or by calling ``apply()`` before anything imports grpc
(README, "Configuration"); this module imports nothing that does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ("GRPC_ENVIRONMENT", "apply", "experiments")

GRPC_ENVIRONMENT: dict[str, str] = {
    # Every child a hub command starts execs at once, so gRPC's fork handlers protect nothing;
    # with them on, `hub demo` printed "skipping fork() handlers" whenever it started a node
    # while its replicas' gRPC threads were busy.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
    # Since grpcio 1.80 a Python process's connections run on gRPC's EventEngine, whose threads
    # wake about four times per call on each side; on the I/O manager before it they sleep. One
    # message each way on an open stream took 175 us at the median and 205 us of CPU on the
    # EventEngine, 99 and 120 on the I/O manager (docs/benchmarks.md, "gRPC's engine").
    "GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener",
}


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set each of ``GRPC_ENVIRONMENT`` that ``environ`` does not already set.

    Raises RuntimeError if that changes this process's environment after grpc was imported:
    gRPC has then read its defaults, and the process would run on them unnoticed.
    """
    missing = {name: value for name, value in GRPC_ENVIRONMENT.items() if name not in environ}
    if missing and environ is os.environ and "grpc" in sys.modules:
        raise RuntimeError(
            f"grpc was imported before hub.grpc.environment.apply(), which would set "
            f"{', '.join(missing)}: gRPC has read its defaults; apply it first"
        )
    environ.update(missing)


def experiments() -> str:
    """The ``GRPC_EXPERIMENTS`` this process runs with, for start-up lines and result lines
    (gRPC read it at import, from the environment ``apply`` had set)."""
    return os.environ.get("GRPC_EXPERIMENTS", "")
