"""The test harness: what tests/, bench/ and chaos/ share to run the pipeline for real.

- `ports`: a free loopback port, or a block of them;
- `ready`: waiting for a process's `/readyz`, and for any condition (`wait_for`);
- `broker`: the local Kafka broker of `deploy/kafka/kafka.sh`;
- `stack`: the stages as real child processes (`Stack`), with an isolated configuration;
- `running`: one stage in this process (`Running`), the way `pipeline.runner.serve` runs it;
- `topics`: reading a topic back.

It imports `pipeline/` (and the stages only where a caller hands it a stage), never tests/, bench/ or
chaos/ (the import contract in pyproject.toml), so bench/ and chaos/ do not depend on the tests.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
