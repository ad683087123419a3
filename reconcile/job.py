"""One complete reconcile run with its I/O: read the registered prefixes, open the clients, run, write
the results. Shared by the one-shot command and the long-running mode.

Results are written only for a run that completed: a run cut short by an API failure would store a
partial picture as if it were the whole period.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from pipeline.settings import Settings
from reconcile import metrics
from reconcile.insights import InsightsClient, InsightsError, Policy
from reconcile.kafkaio import Publisher, read_registry
from reconcile.ourapi import ReadApiClient, ReadApiError
from reconcile.report import Report
from reconcile.run import Options, reconcile

log = logging.getLogger(__name__)


class ReconcileFailed(Exception):
    """The run could not be completed; the message is one line for the operator."""


async def execute(
    settings: Settings,
    options: Options,
    *,
    read_api: str,
    publisher: Publisher | None = None,
    policy: Policy | None = None,
) -> Report:
    """Run once over `options`' period and publish the results; ReconcileFailed when it could not."""
    api = settings.whereby_api
    api.require_key()  # a ConfigError before anything is read
    try:
        registry = await read_registry(settings)
        if registry.rejected:
            log.warning(f"{registry.rejected} customer records on the dimensions topic are invalid and ignored")
        async with (
            InsightsClient(api, policy=policy) as insights,
            ReadApiClient(read_api, settings.read_api_token) as ours,
        ):
            if publisher is None:
                async with Publisher(settings) as own:
                    report = await reconcile(options, insights, ours, registry, own.send_events)
                    await own.send_results(report)
            else:
                report = await reconcile(options, insights, ours, registry, publisher.send_events)
                await publisher.send_results(report)
    except (InsightsError, ReadApiError) as exc:
        metrics.RUNS.labels("failed").inc()
        raise ReconcileFailed(str(exc)) from None
    except KafkaError as exc:
        metrics.RUNS.labels("failed").inc()
        raise ReconcileFailed(f"could not write to Kafka at {settings.kafka_bootstrap_servers}: {exc!r}") from None
    metrics.RUNS.labels("ok").inc()
    metrics.LAST_SUCCESS.set_to_current_time()
    if report.skipped_rows:
        skipped = ", ".join(f"{n} {endpoint}" for endpoint, n in sorted(report.skipped_rows.items()))
        log.warning(f"Insights rows skipped as unusable (wrong types or missing ids/times): {skipped}")
    counts = report.counts()
    log.info(
        f"reconciled {len(report.sessions)} sessions: {counts['match']} match, {counts['mismatch']} mismatch, "
        f"{counts['missing']} missing; backfilled {report.backfilled_events} events",
        extra={"run_id": report.run_id, "from_ms": report.from_ms, "to_ms": report.to_ms},
    )
    return report
