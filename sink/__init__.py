"""Sink: everything ClickHouse. Versioned schema, batching writer, commit-after-insert consumer."""
