"""The configuration ingest checks at start (also `whereby-pipeline config check --stage ingest`)."""

from __future__ import annotations

from pipeline.settings import IngestSettings


def check(settings: IngestSettings) -> None:
    """Raise ConfigError (one line, says what to set) if ingest cannot start with `settings`.

    Settings parsing already refused bad values and unloadable TLS files; ingest adds that it cannot
    verify a single webhook without Whereby's signing secret.
    """
    settings.require_webhook_secrets()
