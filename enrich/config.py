"""The configuration enrich checks at start (also `whereby-pipeline config check --stage enrich`)."""

from __future__ import annotations

from pipeline.settings import EnrichSettings


def check(settings: EnrichSettings) -> None:
    """Raise ConfigError (one line, says what to set) if enrich cannot start with `settings`.

    Enrich needs nothing beyond settings that parse (its Kafka access, TLS files included, is checked
    while parsing them). The function still exists, and the service calls it, so that a rule added
    here is run by both the stage's start and `config check` without a second copy.
    """
    del settings  # no enrich-specific rule (yet)
