"""`python -m ingest`: run the webhook receiver alone, the same as `whereby-pipeline ingest`.

Useful where only this stage is installed or wanted (tests and the benchmark start it this way), since
it loads no other stage's code.
"""

from __future__ import annotations

import sys

from ingest.service import IngestService
from ingest.workers import listen_on, shares_port
from pipeline.cli import run_service
from pipeline.settings import ConfigError, IngestSettings


def main() -> int:
    """Run the receiver until SIGTERM/SIGINT; a configuration error is one line on stderr and exit 2."""
    try:
        return run_service(IngestService, listen_on, settings_class=IngestSettings, shared_port=shares_port)
    except ConfigError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
