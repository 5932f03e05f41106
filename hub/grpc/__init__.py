"""The gRPC facade: thin translations of TaskService and NodeService onto the pool and journal."""
