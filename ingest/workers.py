"""Where the receiver listens: one process on INGEST_PORT, or one of INGEST_WORKERS processes sharing it.

Kept apart from `ingest.service` (request handling): several workers only change the listening socket.
With SO_REUSEPORT the kernel spreads new connections over the workers, so one port serves N cores'
worth of requests; the workers share nothing else (each has its own producers to the same topics).
"""

from __future__ import annotations

from pipeline.settings import IngestSettings


def listen_on(settings: IngestSettings) -> tuple[str, int]:
    """The host and port the webhook receiver listens on."""
    return settings.ingest_host, settings.ingest_port


def shares_port(settings: IngestSettings) -> bool:
    """True when several workers listen on INGEST_PORT together (INGEST_WORKERS > 1)."""
    return settings.ingest_workers > 1
