"""`python -m chaos.crashing_sink`: the sink stage, which SIGKILLs itself right after its first insert of
rows and before committing their offsets (the `kill_sink_after_insert` scenario of `make chaos`).

The crash is injected here, through the sink's `after_insert` plug-in point, so the shipped sink has no
self-kill switch: nothing in its settings or environment can make it do this.
"""

from __future__ import annotations

import os
import signal
import sys

from pipeline.cli import run_service
from pipeline.settings import SinkSettings
from sink.batch import Batch
from sink.service import SinkService


def crash_after_insert(batch: Batch) -> None:
    """Die without a trace in the insert → commit window: the rows are stored, the offsets are not."""
    if batch.rows:
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    """Run the sink exactly as `whereby-pipeline sink` does, with the crash plugged in."""
    return run_service(
        lambda settings: SinkService(settings, after_insert=crash_after_insert),
        lambda settings: (settings.sink_host, settings.sink_port),
        settings_class=SinkSettings,
    )


if __name__ == "__main__":
    sys.exit(main())
