"""What to do about a failed Kafka operation: retry it with backoff, or stop the stage. Pure functions.

Like :mod:`sink.errors` for ClickHouse:

- **Retry**: the broker or the network is (for now) unable to take the request: a leader election, a
  broker restarting, too few in-sync replicas, a full producer buffer, a timeout. aiokafka marks most of
  these on the class (`retriable`); a few transient ones it does not mark are listed in `TRANSIENT`.
  Nothing is committed meanwhile, so a retry loses nothing.
- **Fatal**: retrying cannot help (an ACL that refuses the principal, a record larger than the broker
  accepts, a producer fenced by another, a bug). The stage stops with a one-line message saying what to
  fix, and commits nothing; before this, enrich retried these once a second, forever.

The cause chain (`__cause__`, `__context__`) is walked, so a Kafka error wrapped by another keeps its verdict.
"""

from __future__ import annotations

from typing import Literal

from aiokafka import errors

Verdict = Literal["retry", "fatal"]

# Transient although aiokafka does not mark them `retriable`.
TRANSIENT: tuple[type[errors.KafkaError], ...] = (
    errors.KafkaTimeoutError,  # a send not acknowledged in time / the producer's buffer stayed full
    errors.BrokerNotAvailableError,
    errors.ReplicaNotAvailableError,
    errors.KafkaUnavailableError,
    errors.RebalanceInProgressError,
)

# Fatal, with what to tell the operator (checked before the `retriable` flag: first match wins).
FATAL_HINTS: tuple[tuple[type[errors.KafkaError], str], ...] = (
    (errors.TopicAuthorizationFailedError, "not authorised for a topic: grant this principal the topic's ACLs"),
    (errors.GroupAuthorizationFailedError, "not authorised for the consumer group: grant this principal the group"),
    (errors.ClusterAuthorizationFailedError, "not authorised on the cluster (idempotent writes need IDEMPOTENT_WRITE)"),
    (errors.TransactionalIdAuthorizationFailed, "not authorised for the transactional id"),
    (errors.SaslAuthenticationFailed, "SASL authentication failed: check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"),
    (errors.AuthenticationFailedError, "authentication failed: check the Kafka credentials"),
    (errors.UnsupportedSaslMechanismError, "the broker does not offer KAFKA_SASL_MECHANISM"),
    (errors.MessageSizeTooLargeError, "a record is larger than the broker accepts: raise max.message.bytes"),
    (errors.RecordTooLargeError, "a record is larger than the producer's max_request_size"),
    (errors.RecordListTooLargeError, "a record batch is larger than the broker accepts"),
    (errors.InvalidTopicError, "a topic name is invalid: check the TOPIC_* settings"),
    (errors.UnsupportedVersionError, "the broker is too old for this client"),
    (errors.ProducerFenced, "another producer with the same id took over"),
    (errors.ProducerClosed, "the producer was closed"),
)


class KafkaFatal(Exception):
    """A Kafka failure that retrying cannot fix; its message is one line for the operator, as is."""


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, outermost first (each once, so a cycle cannot loop)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> Verdict:
    """`retry` for a transient Kafka failure, `fatal` for anything retrying cannot help (non-Kafka included)."""
    for error in _chain(exc):
        if any(isinstance(error, kind) for kind, _ in FATAL_HINTS):
            return "fatal"
        if isinstance(error, TRANSIENT):
            return "retry"
        if isinstance(error, errors.KafkaError):
            return "retry" if error.retriable else "fatal"
    return "fatal"


def describe(exc: BaseException, doing: str) -> str:
    """One line for the log: what was being done, the error's type, and what to fix when it is known."""
    for error in _chain(exc):
        for kind, hint in FATAL_HINTS:
            if isinstance(error, kind):
                return f"Kafka {doing} failed ({type(error).__name__}): {hint}"
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"Kafka {doing} failed ({type(exc).__name__}{': ' + detail if detail else ''})"


def fatal(exc: BaseException, doing: str) -> KafkaFatal:
    """The exception that stops the stage, chained to `exc` (the traceback stays available at debug level)."""
    failure = KafkaFatal(describe(exc, doing) + "; not retried, the stage stops without committing")
    failure.__cause__ = exc
    return failure
