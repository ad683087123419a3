"""Kafka TLS/SASL and ClickHouse credentials from the environment: good combinations, and the bad ones
failing at start with a one-line ConfigError that names the variable."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from pipeline.settings import ConfigError, Settings

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"}


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def config_error(**env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**env)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate with an encrypted key, made with the openssl command."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]  # EC: key generation is instant
    sign_out = ["-out", "client.pem", "-days", "2"]
    steps = [
        ["req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca"],
        ["req", *ec, "-passout", "pass:kp", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client"],
        ["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", *sign_out],
    ]
    for step in steps:
        subprocess.run(["openssl", *step], cwd=d, check=True, capture_output=True)
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


def test_defaults_are_plaintext_without_extra_credentials() -> None:
    s = settings()
    assert s.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert s.clickhouse_connect_kwargs() == {"dsn": s.clickhouse_url}
    assert s.clickhouse_url.startswith("chdb://")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_ssl_with_system_cas(mechanism: str) -> None:
    kwargs = settings(**SASL, KAFKA_SASL_MECHANISM=mechanism).kafka_client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == mechanism.upper()
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", "pw")
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is True


def test_sasl_plaintext_has_no_tls() -> None:
    env = {**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}
    kwargs = settings(**env).kafka_client_kwargs()
    assert "ssl_context" not in kwargs
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"


def test_password_from_a_mounted_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")  # secrets written by kubectl/editors often end in a newline
    env = {**SASL, "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": ""}
    s = settings(**env, KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "pw"))
    assert s.kafka_client_kwargs()["sasl_plain_password"] == "from-file"
    assert "from-file" not in repr(s)


def test_webhook_secret_from_file(tmp_path: Path) -> None:
    (tmp_path / "whsec").write_text("a,b\n")
    assert settings(WHEREBY_WEBHOOK_SECRET_FILE=str(tmp_path / "whsec")).webhook_secrets == ("a", "b")


def test_read_api_token_from_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("a-long-read-api-token\n")
    s = settings(READ_API_TOKEN_FILE=str(tmp_path / "token"))
    assert s.read_api_token == "a-long-read-api-token"
    assert "a-long-read-api-token" not in repr(s)
    assert "READ_API_TOKEN" in config_error(READ_API_TOKEN="x" * 16, READ_API_TOKEN_FILE=str(tmp_path / "token"))
    assert "READ_API_TOKEN_FILE" in config_error(READ_API_TOKEN_FILE=str(tmp_path / "missing"))


def test_mutual_tls_with_an_encrypted_key(pki: dict[str, Path]) -> None:
    s = settings(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(pki["ca"]),
        KAFKA_SSL_CERTFILE=str(pki["cert"]),
        KAFKA_SSL_KEYFILE=str(pki["key"]),
        KAFKA_SSL_KEY_PASSWORD="kp",
    )
    kwargs = s.kafka_client_kwargs()
    assert kwargs == {"security_protocol": "SSL", "ssl_context": kwargs["ssl_context"]}
    assert "kp" not in repr(s)


def test_wrong_key_password_fails_at_start(pki: dict[str, Path]) -> None:
    message = config_error(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERTFILE=str(pki["cert"]),
        KAFKA_SSL_KEYFILE=str(pki["key"]),
        KAFKA_SSL_KEY_PASSWORD="wrong",
    )
    assert "KAFKA_SSL_KEY_PASSWORD" in message


def test_hostname_check_can_be_turned_off_explicitly() -> None:
    kwargs = settings(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CHECK_HOSTNAME="false").kafka_client_kwargs()
    assert kwargs["ssl_context"].check_hostname is False


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({**SASL}, "KAFKA_SASL_MECHANISM"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SASL_USERNAME": "svc"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SSL_CAFILE": "/etc/hostname"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/etc/hostname"}, "KAFKA_SSL_CERTFILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME"),
        ({"KAFKA_SASL_PASSWORD": "x", "KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"}, "KAFKA_SASL_PASSWORD_FILE"),
        ({"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "KAFKA_SASL_PASSWORD_FILE"),
        ({"WHEREBY_WEBHOOK_SECRET_FILE": "/nonexistent/secret"}, "WHEREBY_WEBHOOK_SECRET_FILE"),
    ],
)
def test_bad_kafka_combinations(env: dict[str, str], names: str) -> None:
    assert names in config_error(**env)


def test_clickhouse_separate_credentials_and_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here: clickhouse-connect loads it on connect\n")
    (tmp_path / "pw").write_text("s3cret\n")
    s = settings(
        CLICKHOUSE_URL="https://ch.example.internal:8443/whereby",
        CLICKHOUSE_USER="sink",
        CLICKHOUSE_PASSWORD_FILE=str(tmp_path / "pw"),
        CLICKHOUSE_CA_FILE=str(ca),
    )
    assert s.clickhouse_connect_kwargs() == {
        "dsn": "https://ch.example.internal:8443/whereby",
        "username": "sink",
        "password": "s3cret",
        "verify": True,
        "ca_cert": str(ca),
    }
    assert "s3cret" not in repr(s)


def test_clickhouse_credentials_in_the_url_pass_through() -> None:
    url = "https://sink:pw@ch.example.internal:8443"
    assert settings(CLICKHOUSE_URL=url).clickhouse_connect_kwargs() == {"dsn": url, "verify": True}


def test_clickhouse_plain_http_for_compose() -> None:
    s = settings(CLICKHOUSE_URL="http://clickhouse:8123", CLICKHOUSE_USER="default", CLICKHOUSE_PASSWORD="x")
    assert s.clickhouse_connect_kwargs() == {"dsn": "http://clickhouse:8123", "username": "default", "password": "x"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CLICKHOUSE_USER": "sink"}, "chdb://"),
        ({"CLICKHOUSE_URL": "https://u:p@ch:8443", "CLICKHOUSE_USER": "sink"}, "CLICKHOUSE_USER"),
        ({"CLICKHOUSE_URL": "http://ch:8123", "CLICKHOUSE_CA_FILE": "/etc/hostname"}, "https://"),
        ({"CLICKHOUSE_URL": "https://ch:8443", "CLICKHOUSE_PASSWORD": "p"}, "CLICKHOUSE_USER"),
        ({"CLICKHOUSE_URL": "https://ch:8443", "CLICKHOUSE_CA_FILE": "/nonexistent/ca"}, "CLICKHOUSE_CA_FILE"),
        ({"CLICKHOUSE_URL": "tcp://ch:9000"}, "CLICKHOUSE_URL"),
    ],
)
def test_bad_clickhouse_combinations(env: dict[str, str], names: str) -> None:
    assert names in config_error(**env)
