"""Ingest's subcommands: `ingest` (run the receiver) and `sign` (sign a body for testing by hand)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from ingest import signature
from ingest.service import WEBHOOK_PATH, IngestService
from ingest.workers import listen_on, shares_port
from pipeline.cli import load_settings, run_service
from pipeline.settings import ConfigError, IngestSettings


def _sign(args: argparse.Namespace) -> int:
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    secret = args.secret or load_settings().require_webhook_secrets()[0]
    header = signature.sign(body, secret, args.timestamp)
    if not args.curl:
        print(f"Whereby-Signature: {header}")
        return 0
    settings = load_settings()
    url = args.url or f"http://127.0.0.1:{settings.ingest_port}{WEBHOOK_PATH}"
    body_arg = "@-" if args.file == "-" else f"@{args.file}"
    print(
        "curl -sS -X POST "
        f"-H 'Content-Type: application/json' -H {shlex.quote('Whereby-Signature: ' + header)} "
        f"--data-binary {shlex.quote(body_arg)} {shlex.quote(url)}"
    )
    return 0


def register(sub: Any) -> None:
    """Add ingest's subcommands to the `whereby-pipeline` parser."""
    run = sub.add_parser("ingest", help="run the webhook receiver (INGEST_HOST:INGEST_PORT)")
    run.set_defaults(
        handler=lambda _: run_service(IngestService, listen_on, settings_class=IngestSettings, shared_port=shares_port)
    )
    sign = sub.add_parser("sign", help="print the Whereby-Signature header for a body, as Whereby would")
    sign.add_argument("file", help="the JSON body, sent byte for byte ('-' reads standard input)")
    sign.add_argument("--secret", help="signing secret (default: the first of WHEREBY_WEBHOOK_SECRET)")
    sign.add_argument("--timestamp", type=int, help="unix seconds (default: now)")
    sign.add_argument("--curl", action="store_true", help="print a whole curl command that posts the body")
    sign.add_argument("--url", help="webhook URL for --curl (default: the local ingest)")
    sign.set_defaults(handler=_sign)
