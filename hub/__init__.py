"""hub: a distributed task hub for AI-agent worker nodes, on NATS JetStream."""

__version__ = "0.1.0"
