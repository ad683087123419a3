"""Classifying Kafka failures (pipeline/kafkaerrors.py): transient ones are retried with backoff, the
ones retrying cannot fix stop the stage with one line saying what to fix."""

from __future__ import annotations

import pytest
from aiokafka import errors

from pipeline import kafkaerrors
from pipeline.backoff import Backoff

VERDICTS = [
    pytest.param(errors.KafkaConnectionError(), "retry", id="connection"),
    pytest.param(errors.NotLeaderForPartitionError(), "retry", id="leader-election"),
    pytest.param(errors.NotEnoughReplicasError(), "retry", id="too-few-in-sync-replicas"),
    pytest.param(errors.RequestTimedOutError(), "retry", id="request-timeout"),
    pytest.param(errors.KafkaTimeoutError(), "retry", id="buffer-full-not-marked-retriable"),
    pytest.param(errors.BrokerNotAvailableError(), "retry", id="broker-restarting-not-marked"),
    pytest.param(errors.TopicAuthorizationFailedError(), "fatal", id="topic-acl"),
    pytest.param(errors.GroupAuthorizationFailedError(), "fatal", id="group-acl"),
    pytest.param(errors.ClusterAuthorizationFailedError(), "fatal", id="idempotent-write-acl"),
    pytest.param(errors.MessageSizeTooLargeError(), "fatal", id="record-too-large-for-broker"),
    pytest.param(errors.RecordTooLargeError(), "fatal", id="record-too-large-for-producer"),
    pytest.param(errors.SaslAuthenticationFailed(), "fatal", id="sasl"),
    pytest.param(errors.UnknownError(), "fatal", id="not-retriable"),
    pytest.param(ValueError("a bug"), "fatal", id="not-kafka"),
]


@pytest.mark.parametrize(("exc", "verdict"), VERDICTS)
def test_classify(exc: BaseException, verdict: str) -> None:
    assert kafkaerrors.classify(exc) == verdict


def test_the_cause_chain_is_walked() -> None:
    try:
        try:
            raise errors.TopicAuthorizationFailedError()
        except errors.KafkaError as inner:
            raise RuntimeError("send failed") from inner
    except RuntimeError as outer:
        assert kafkaerrors.classify(outer) == "fatal"
        assert "grant this principal" in kafkaerrors.describe(outer, "produce")


def test_a_fatal_failure_is_one_line_naming_the_fix() -> None:
    failure = kafkaerrors.fatal(errors.MessageSizeTooLargeError("multi\nline"), "produce")
    text = str(failure)
    assert "\n" not in text
    assert text.startswith("Kafka produce failed (MessageSizeTooLargeError)") and "max.message.bytes" in text
    assert isinstance(failure.__cause__, errors.MessageSizeTooLargeError)


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(base_s=1.0, cap_s=4.0)
    delays = [backoff.next() for _ in range(5)]
    assert [0.5 <= delays[0] <= 1, 1 <= delays[1] <= 2, 2 <= delays[2] <= 4, 2 <= delays[4] <= 4] == [True] * 4
    backoff.reset()
    assert backoff.next() <= 1.0
