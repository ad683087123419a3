"""Reconcile's settings (Whereby's API) and the shared raw-record builder of the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import contract
from pipeline.settings import DEFAULT_WHEREBY_API_POINTS_PER_MINUTE, ConfigError, Settings

KEY = "wb_live_0123456789abcdef"


def test_defaults_are_wherebys_url_and_a_budget_well_under_the_build_plan() -> None:
    api = Settings.from_env({}).whereby_api
    assert api.url == "https://api.whereby.dev/v1"
    assert api.key == ""
    assert api.points_per_minute == DEFAULT_WHEREBY_API_POINTS_PER_MINUTE < 100
    with pytest.raises(ConfigError, match="WHEREBY_API_KEY is not set"):
        api.require_key()


def test_the_key_comes_from_a_file_and_never_shows_in_a_repr(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    settings = Settings.from_env({"WHEREBY_API_KEY_FILE": str(secret), "WHEREBY_API_URL": "http://127.0.0.1:9/v1/"})
    assert settings.whereby_api.require_key() == KEY
    assert settings.whereby_api.url == "http://127.0.0.1:9/v1"
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WHEREBY_API_KEY": KEY, "WHEREBY_API_KEY_FILE": "/x"}, "either WHEREBY_API_KEY or WHEREBY_API_KEY_FILE"),
        ({"WHEREBY_API_KEY_FILE": "/nonexistent/key"}, "WHEREBY_API_KEY_FILE=/nonexistent/key: cannot read it"),
        ({"WHEREBY_API_KEY": "two words"}, "WHEREBY_API_KEY holds spaces"),
        ({"WHEREBY_API_URL": "ftp://x"}, "WHEREBY_API_URL must start with https://"),
        ({"WHEREBY_API_POINTS_PER_MINUTE": "lots"}, "WHEREBY_API_POINTS_PER_MINUTE must be a whole number"),
        ({"WHEREBY_API_POINTS_PER_MINUTE": "0"}, "WHEREBY_API_POINTS_PER_MINUTE must be between 1"),
        ({"RECONCILE_PORT": "99999"}, "RECONCILE_PORT must be between"),
    ],
)
def test_bad_values_name_the_variable_in_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value)
    assert "two words" not in str(caught.value)  # the key is never echoed


def test_raw_record_is_ingests_key_and_headers_plus_the_source() -> None:
    key, headers = contract.raw_record(
        "/acme-1", "e" * 64, "room.client.left", received_at_ms=123, source=contract.SOURCE_INSIGHTS, instance=b"r@1"
    )
    assert key == b"/acme-1"
    assert dict(headers) == {
        contract.HEADER_EVENT_ID: b"e" * 64,
        contract.HEADER_EVENT_TYPE: b"room.client.left",
        contract.HEADER_RECEIVED_AT_MS: b"123",
        contract.HEADER_INGRESS_INSTANCE: b"r@1",
        contract.HEADER_EVENT_SOURCE: b"insights",
        contract.HEADER_CONTRACT_VERSION: str(contract.CONTRACT_VERSION).encode(),
        contract.HEADER_PRODUCER: contract.producer("reconcile").encode(),
    }
    key, headers = contract.raw_record(None, "x", "t", received_at_ms=1)
    assert key is None and contract.HEADER_EVENT_SOURCE not in dict(headers)
