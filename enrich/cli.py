"""Enrich's subcommands: `enrich` (run the stage)."""

from __future__ import annotations

from typing import Any

from enrich.service import EnrichService
from pipeline.cli import run_service


def register(sub: Any) -> None:
    """Add enrich's subcommands to the `whereby-pipeline` parser."""
    run = sub.add_parser("enrich", help="run the enrichment consumer (metrics on ENRICH_HOST:ENRICH_PORT)")
    run.set_defaults(handler=lambda _: run_service(EnrichService, lambda s: (s.enrich_host, s.enrich_port)))
