"""Webhook settings an internet-facing receiver must not start with: a replay window over an hour, a
placeholder or short signing secret. Each fails at start with a one-line ConfigError naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import ConfigError, Settings

GOOD = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"


def ingest_error(**env: str) -> str:
    """The one-line message ingest would stop with (settings are read, then the secrets required)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_webhook_secrets()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", ["3601", "86400", "0"])
def test_a_tolerance_outside_one_second_to_an_hour_is_refused(value: str) -> None:
    message = ingest_error(WHEREBY_WEBHOOK_SECRET=GOOD, WEBHOOK_TOLERANCE_S=value)
    assert message.startswith("WEBHOOK_TOLERANCE_S") and "3600" in message


def test_an_hour_of_tolerance_is_the_most_allowed() -> None:
    assert Settings.from_env({"WEBHOOK_TOLERANCE_S": "3600"}).webhook_tolerance_s == 3600


@pytest.mark.parametrize(
    ("secrets", "says"),
    [
        ("short-secret", "shorter than 16 characters"),
        ("REPLACE_WITH_THE_WHEREBY_SECRET", "placeholder"),
        ("replace-me-with-a-real-secret-value", "placeholder"),
        ("please-changeme-0123456789", "placeholder"),
        ("CHANGEME-CHANGEME-CHANGEME", "placeholder"),
        (f"{GOOD},tiny", "secret 2 of 2 is shorter"),
    ],
)
def test_placeholder_and_short_secrets_are_refused_without_echoing_them(secrets: str, says: str) -> None:
    message = ingest_error(WHEREBY_WEBHOOK_SECRET=secrets)
    assert message.startswith("WHEREBY_WEBHOOK_SECRET") and says in message
    for secret in secrets.split(","):
        assert secret not in message


def test_a_placeholder_from_a_mounted_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "whsec").write_text("REPLACE_ME_WITH_THE_SECRET\n")
    assert "placeholder" in ingest_error(WHEREBY_WEBHOOK_SECRET_FILE=str(tmp_path / "whsec"))


def test_a_missing_secret_says_where_to_find_it() -> None:
    assert "dashboard" in ingest_error()


def test_long_random_secrets_pass_and_other_stages_never_check_them() -> None:
    assert Settings.from_env({"WHEREBY_WEBHOOK_SECRET": f"{GOOD}, {GOOD[::-1]}"}).require_webhook_secrets() == (
        GOOD,
        GOOD[::-1],
    )
    # enrich and sink read the same settings but never call require_webhook_secrets
    assert Settings.from_env({"WHEREBY_WEBHOOK_SECRET": "x"}).webhook_secrets == ("x",)
