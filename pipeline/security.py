"""Secure connections: Kafka TLS/SASL and ClickHouse TLS with credentials, parsed from the environment.

Kept apart from `settings` so that file stays a flat list of plain values. Every secret can come from
the variable itself or from a file named by `<VARIABLE>_FILE` (a mounted Kubernetes/Docker secret), so
passwords need not sit in the process environment. Contradictory combinations fail at start with a
one-line ConfigError: a setting that would be silently ignored is as dangerous as a missing one.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka.helpers import create_ssl_context

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}


class SecurityError(ValueError):
    """A security setting is missing or contradictory; `pipeline.settings` re-raises it as ConfigError.

    (A separate class because settings imports this module, so this one cannot import ConfigError.)
    """


def secret(env: Mapping[str, str], name: str) -> str:
    """`name` from the environment, or the content of the file named by `name_FILE` (trailing newline removed)."""
    value = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if value and path:
        raise SecurityError(f"set either {name} or {name}_FILE, not both")
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SecurityError(f"{name}_FILE={path}: cannot read it ({exc.strerror}); mount the secret there") from None


def _file(env: Mapping[str, str], name: str) -> str:
    """A path that must exist when set: checked now, not at the first connection."""
    path = env.get(name, "").strip()
    if path and not Path(path).is_file():
        raise SecurityError(f"{name}={path}: no such file; mount it or unset {name}")
    return path


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise SecurityError(f"{name} must be true or false, got {raw!r}")
    return raw in _TRUE


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client (producer, consumer, admin) authenticates and encrypts. Default: plaintext."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the CA file if given, else the system's CAs; a client cert for mutual TLS."""
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
                # Always a callable: with None, OpenSSL would prompt on the terminal for an encrypted key.
                password=lambda: self.ssl_key_password,
            )
        except (ssl.SSLError, OSError) as exc:
            raise SecurityError(
                f"cannot load Kafka TLS files ({exc}); check KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, "
                "KAFKA_SSL_KEYFILE and KAFKA_SSL_KEY_PASSWORD"
            ) from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient alike."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def kafka_security_from_env(env: Mapping[str, str]) -> KafkaSecurity:
    """Parse and cross-check the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_* variables."""
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in KAFKA_PROTOCOLS:
        raise SecurityError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_PROTOCOLS)}, got {protocol!r}")
    mechanism = env.get("KAFKA_SASL_MECHANISM", "").strip().upper()
    username = secret(env, "KAFKA_SASL_USERNAME")
    password = secret(env, "KAFKA_SASL_PASSWORD")
    security = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=_file(env, "KAFKA_SSL_CAFILE"),
        ssl_certfile=_file(env, "KAFKA_SSL_CERTFILE"),
        ssl_keyfile=_file(env, "KAFKA_SSL_KEYFILE"),
        ssl_key_password=secret(env, "KAFKA_SSL_KEY_PASSWORD"),
        ssl_check_hostname=_flag(env, "KAFKA_SSL_CHECK_HOSTNAME", True),
    )
    if security.uses_sasl:
        if mechanism not in SASL_MECHANISMS:
            raise SecurityError(
                f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)} with "
                f"KAFKA_SECURITY_PROTOCOL={protocol}, got {mechanism or 'nothing'!r}"
            )
        if not username or not password:
            raise SecurityError(
                f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or their _FILE variants) are required "
                f"with KAFKA_SASL_MECHANISM={mechanism}"
            )
    elif mechanism or username or password:
        raise SecurityError(
            f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL; "
            "set it to SASL_SSL (or SASL_PLAINTEXT)"
        )
    tls_files = security.ssl_cafile or security.ssl_certfile or security.ssl_keyfile or security.ssl_key_password
    if tls_files and not security.uses_ssl:
        raise SecurityError(
            f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS; set it to SSL or SASL_SSL"
        )
    if security.ssl_keyfile and not security.ssl_certfile:
        raise SecurityError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate it belongs to)")
    if security.uses_ssl:
        security.ssl_context()  # load the files now: a bad PEM or key password fails at start
    return security


@dataclass(frozen=True)
class ClickHouseAccess:
    """Credentials and TLS trust for a ClickHouse server, on top of CLICKHOUSE_URL."""

    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    verify: bool = True

    def connect_kwargs(self, url: str) -> dict[str, Any]:
        """Keyword arguments for `clickhouse_connect.get_client(**kwargs)` for `url`."""
        kwargs: dict[str, Any] = {"dsn": url}
        if url.startswith("chdb://"):
            return kwargs
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        if url.startswith("https://"):
            kwargs["verify"] = self.verify
            if self.ca_file:
                kwargs["ca_cert"] = self.ca_file
        return kwargs


def clickhouse_access_from_env(env: Mapping[str, str], url: str) -> ClickHouseAccess:
    """Parse CLICKHOUSE_USER / CLICKHOUSE_PASSWORD(_FILE) / CLICKHOUSE_CA_FILE / CLICKHOUSE_VERIFY against `url`."""
    access = ClickHouseAccess(
        username=secret(env, "CLICKHOUSE_USER"),
        password=secret(env, "CLICKHOUSE_PASSWORD"),
        ca_file=_file(env, "CLICKHOUSE_CA_FILE"),
        verify=_flag(env, "CLICKHOUSE_VERIFY", True),
    )
    set_here = access.username or access.password
    if url.startswith("chdb://"):
        if set_here or access.ca_file:
            raise SecurityError(
                "CLICKHOUSE_USER/PASSWORD/CA_FILE apply to a server, but CLICKHOUSE_URL is the embedded chdb:// "
                "engine; set CLICKHOUSE_URL=https://host:8443"
            )
        return access
    parts = urlsplit(url)
    if set_here and (parts.username or parts.password):
        raise SecurityError("credentials are in both CLICKHOUSE_URL and CLICKHOUSE_USER/PASSWORD; keep one")
    if (access.ca_file or not access.verify) and parts.scheme != "https":
        raise SecurityError("CLICKHOUSE_CA_FILE and CLICKHOUSE_VERIFY need an https:// CLICKHOUSE_URL")
    if access.password and not access.username:
        raise SecurityError("CLICKHOUSE_PASSWORD is set without CLICKHOUSE_USER; set the user it belongs to")
    return access
