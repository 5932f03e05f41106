"""``python -m hub`` is the ``hub`` command (the console script enters here too)."""


def main() -> None:
    # gRPC reads its settings when it is imported: hence here, before anything imports it.
    from hub.grpc import environment

    environment.apply()
    from hub.cli import main as run

    run()


if __name__ == "__main__":
    main()
