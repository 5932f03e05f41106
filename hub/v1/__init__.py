"""Generated protobuf and gRPC modules for protos/hub/v1 (python -m hub.protogen)."""
