"""make bench's rule for an honest ingress figure: a round where the load generator is the busiest
process measured the generator, not the server, and is flagged invalid."""

from __future__ import annotations

import pytest

from bench.ingest_bench import round_validity


@pytest.mark.parametrize(
    ("generator", "servers", "valid"),
    [
        pytest.param(0.96, [0.62], False, id="the issue's case: python generator saturated, bare server idle"),
        pytest.param(0.12, [0.69], True, id="wrk against one worker"),
        pytest.param(0.12, [0.34, 0.44], True, id="wrk against two workers"),
        pytest.param(0.50, [0.45, 0.40], False, id="busier than each worker though not than both together"),
        pytest.param(0.40, [0.40], False, id="a tie counts against the round"),
        pytest.param(0.05, [], False, id="no server process measured"),
    ],
)
def test_a_round_is_invalid_when_the_generator_is_the_busiest_process(
    generator: float, servers: list[float], valid: bool
) -> None:
    reason = round_validity(generator, servers)
    assert (reason is None) is valid
    if reason:
        assert "busiest" in reason
