"""Enrich: resolves customer (room-name prefix) and user (externalId) for each raw Whereby event."""
