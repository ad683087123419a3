"""The shared backbone of the Whereby usage pipeline.

Kept deliberately small: settings, the event contract, Kafka client factories, the service runner and
the CLI. The stages (`ingest`, `enrich`, `sink`) depend on this package and never on each other.
"""
