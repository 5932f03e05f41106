"""``python -m hub`` is the ``hub`` command (the console script enters here too)."""

import os


def main() -> None:
    # Every child a hub command starts (nats-server, replicas, nodes) execs at once, so gRPC's
    # fork handlers protect nothing, and with them on `hub demo` printed "skipping fork()
    # handlers" whenever it started a node while its replicas' gRPC threads were busy. gRPC
    # reads this when it is imported: hence here, before anything imports it.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from hub.cli import main as run

    run()


if __name__ == "__main__":
    main()
