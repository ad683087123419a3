"""Ingest: the HTTP receiver for Whereby webhooks. Verifies, bounds, produces, then answers."""
