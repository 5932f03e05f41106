"""Development tooling: a local NATS cluster for tests, benchmarks and ``hub dev`` commands.

Nothing here is imported by a running replica; it exists so that the same code that a fault test
uses to start, kill and restart servers is what a developer runs by hand.
"""
