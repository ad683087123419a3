"""The sink reports its consumer lag per partition while it runs, and it falls to zero once caught up."""

from __future__ import annotations

import dataclasses

from pipeline.lag import LAG
from pipeline.settings import Settings
from sink.service import SinkService
from tests.integration.test_sink_model import meeting
from tests.integration.test_sink_service import ROOM, enriched_records, produce, stored
from tests.support import Running, wait_for


def sink_lag(topic: str) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for metric in LAG.collect()
        for sample in metric.samples
        if sample.labels.get("stage") == "sink" and sample.labels.get("topic") == topic
    }


async def test_sink_reports_lag_per_partition_and_reaches_zero(settings: Settings) -> None:
    settings = dataclasses.replace(settings, lag_interval_s=0.2)
    docs = meeting(ROOM)
    await produce(settings, settings.topic_enriched, enriched_records(docs))
    sink = SinkService(settings)
    async with Running(sink):
        await stored(sink, len(docs))
        lags = await wait_for(
            lambda: (lag := sink_lag(settings.topic_enriched)) and all(v == 0 for v in lag.values()) and lag
        )
        assert set(lags) == {"0", "1", "2"}  # every partition of the topic is reported, by number
    assert sink_lag(settings.topic_enriched) == {}  # series are removed when the sink stops
