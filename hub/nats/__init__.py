"""Everything that speaks to NATS: the embedded server, names, connection and error mapping."""
