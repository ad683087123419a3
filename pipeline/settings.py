"""Settings from the environment, validated once at startup.

Every value has a documented environment variable (see the README's configuration table). A bad
value raises :class:`ConfigError` with a one-line message that names the variable and what to set,
so a misconfigured service fails at start instead of at the first event.

Settings per stage: :class:`CommonSettings` (Kafka, topics, HTTP limits, lifecycle bounds) under
:class:`IngestSettings`, :class:`EnrichSettings` and :class:`SinkSettings`; `X.from_env` reads and
validates exactly the variables of X, so each stage refuses only what it uses. :class:`Settings` is all of
them at once, for the tools that span stages (supervise, replay, forget, dims, report, reconcile).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pipeline import contract, erasure, security, usersource


class ConfigError(Exception):
    """A setting is missing or invalid. The message is meant for the operator, as is."""


# A replay window longer than an hour would let a captured request be re-sent long after the fact; the
# signature check's purpose is gone by then (Whereby's own sample allows 60 s, we default to 300 s).
MAX_WEBHOOK_TOLERANCE_S = 3600
# Whereby generates long random signing secrets; anything short or a template's placeholder means the
# real one was never put in, and an endpoint on the internet would accept forgeries signed with it.
MIN_WEBHOOK_SECRET_CHARS = 16
PLACEHOLDER_MARKERS = ("replace", "changeme")


def check_webhook_secrets(secrets: tuple[str, ...], variable: str = "WHEREBY_WEBHOOK_SECRET") -> None:
    """Refuse an empty list, a secret shorter than 16 characters or one containing a placeholder marker
    (`REPLACE`, `changeme`, any case). The message names `variable` and the secret's position, never its value."""
    if not secrets:
        raise ConfigError(
            f"{variable} is not set: set it to the signing secret shown in Whereby's "
            "dashboard (Configure -> Webhooks); separate several with commas during rotation"
        )
    for position, secret in enumerate(secrets, start=1):
        which = f"secret {position} of {len(secrets)}" if len(secrets) > 1 else "the secret"
        lowered = secret.lower()
        if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
            raise ConfigError(
                f"{variable}: {which} is a placeholder (contains REPLACE or changeme); "
                "set the signing secret shown in Whereby's dashboard"
            )
        if len(secret) < MIN_WEBHOOK_SECRET_CHARS:
            raise ConfigError(
                f"{variable}: {which} is shorter than {MIN_WEBHOOK_SECRET_CHARS} characters; "
                "set the signing secret shown in Whereby's dashboard"
            )


def _dotenv(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from a .env file; the real environment always wins over it."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip().strip("'\"")
    return values


# The raw archive outlives the raw topic (90 days) so that `replay` can re-attribute older history; 13
# months keeps a year of it plus a month. An erased person's original bodies stay there until they age
# out (README, "Personal data"), so this is also the longest an erasure takes to be complete.
DEFAULT_RAW_ARCHIVE_RETENTION_DAYS = 395


def _erasure_key(merged: Mapping[str, str]) -> str:
    """ERASURE_KEY (or ERASURE_KEY_FILE): may be unset (only `forget` needs it), never a placeholder."""
    try:
        key = security.secret(merged, "ERASURE_KEY")
    except security.SecurityError as exc:
        raise ConfigError(str(exc)) from None
    if key and (len(key) < erasure.MIN_KEY_CHARS or any(m in key.lower() for m in PLACEHOLDER_MARKERS)):
        raise ConfigError(
            f"ERASURE_KEY must be a random secret of at least {erasure.MIN_KEY_CHARS} characters "
            "(e.g. `openssl rand -hex 32`), not a placeholder"
        )
    return key


# Under Kubernetes' default terminationGracePeriodSeconds (30 s) with a margin for the runtime's own steps.
DEFAULT_SHUTDOWN_TIMEOUT_S = 25.0
# What a process manager should wait beyond SHUTDOWN_TIMEOUT_S before killing a stage (the interpreter's
# own exit, a log flush): the supervisor does, and the deploy files' grace periods are at least the sum.
GRACE_MARGIN_S = 5.0
# Far above a healthy loop's longest step (a poll waits 0.5 s; a produce that is not acknowledged gives
# up after 30 s and the batch is retried), so only a loop that is really stuck is reported dead.
DEFAULT_LIVENESS_STALL_S = 120.0
MAX_SHUTDOWN_TIMEOUT_S = 600.0

DEFAULT_WHEREBY_API_URL = "https://api.whereby.dev/v1"
# Whereby's API budget is per organisation and shared by all its keys (Build: 100 points a minute); an
# Insights read may cost several points. 30 leaves most of the Build budget to the customer's own calls.
DEFAULT_WHEREBY_API_POINTS_PER_MINUTE = 30


@dataclass(frozen=True)
class WherebyApi:
    """Whereby's REST API (the Insights endpoints), used by `whereby-pipeline reconcile` only."""

    url: str = DEFAULT_WHEREBY_API_URL
    # Never in a repr, a log line or an error message.
    key: str = field(default="", repr=False)
    points_per_minute: int = DEFAULT_WHEREBY_API_POINTS_PER_MINUTE
    timeout_s: float = 30.0

    def require_key(self) -> str:
        """The API key, or a ConfigError telling the operator what to set."""
        if not self.key:
            raise ConfigError(
                "WHEREBY_API_KEY is not set: create an API key in Whereby's dashboard (Configure -> API) and set "
                "WHEREBY_API_KEY or WHEREBY_API_KEY_FILE"
            )
        return self.key


class _Reader:
    """Typed access to the merged environment, with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name, "").strip()
        return value or default

    def integer(self, name: str, default: int, *, low: int = 0, high: int = 2**31) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str, default: float, *, low: float = 0.0) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if value <= low:
            raise ConfigError(f"{name} must be greater than {low}, got {value}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, low=0, high=65535)

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw[:20]!r}")


def _whereby_api(merged: Mapping[str, str], env: _Reader) -> WherebyApi:
    url = env.text("WHEREBY_API_URL", DEFAULT_WHEREBY_API_URL).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"WHEREBY_API_URL must start with https:// (or http:// for a local test), got {url[:40]!r}")
    try:
        key = security.secret(merged, "WHEREBY_API_KEY")
    except security.SecurityError as exc:
        raise ConfigError(str(exc)) from None
    # It goes into an HTTP header: whitespace or control characters would break (or inject into) it.
    if key and (any(ch.isspace() or not ch.isprintable() for ch in key) or not key.isascii()):
        raise ConfigError("WHEREBY_API_KEY holds spaces or non-printable characters; paste the key alone")
    return WherebyApi(
        url=url,
        key=key,
        points_per_minute=env.integer(
            "WHEREBY_API_POINTS_PER_MINUTE", DEFAULT_WHEREBY_API_POINTS_PER_MINUTE, low=1, high=100_000
        ),
        timeout_s=env.number("WHEREBY_API_TIMEOUT_S", 30.0),
    )


def _shutdown_timeout(env: _Reader) -> float:
    value = env.number("SHUTDOWN_TIMEOUT_S", DEFAULT_SHUTDOWN_TIMEOUT_S)
    if value < 1 or value > MAX_SHUTDOWN_TIMEOUT_S:
        raise ConfigError(
            f"SHUTDOWN_TIMEOUT_S must be between 1 and {MAX_SHUTDOWN_TIMEOUT_S:.0f} seconds, got {value:g}; "
            "keep it below the orchestrator's grace period (terminationGracePeriodSeconds, stop_grace_period)"
        )
    return value


def _user_id_source(env: _Reader) -> str:
    raw = env.text("USER_ID_SOURCE", "")
    if not raw:
        return ""
    try:
        return usersource.text_of(usersource.parse(raw))
    except usersource.UserIdSourceError as exc:
        raise ConfigError(f"USER_ID_SOURCE {exc} (e.g. USER_ID_SOURCE=externalId,metadata:userId)") from None


def _security_error(exc: security.SecurityError) -> ConfigError:
    return ConfigError(str(exc))


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """What every stage reads: Kafka (brokers, topics, TLS/SASL), its HTTP port's limits, its identity and
    its lifecycle bounds. Each stage's settings class adds its own part, and `from_env` on a class reads
    and validates exactly the variables of that class: a stage never refuses to start over a variable
    only another stage uses (`config check --stage NAME` runs the same reading)."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_connect_timeout_s: float = 30.0
    topic_raw: str = contract.TOPIC_RAW
    topic_enriched: str = contract.TOPIC_ENRICHED
    topic_dimensions: str = contract.TOPIC_DIMENSIONS
    topic_deadletter: str = contract.TOPIC_DEADLETTER
    # Reconcile's results topic: the sink consumes it, `topics` creates it with the others.
    topic_reconciliation: str = contract.TOPIC_RECONCILIATION
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    # min.insync.replicas of created topics; 0 leaves the broker's default.
    topic_min_insync_replicas: int = 0
    # Secure connections (see pipeline/security.py); defaults keep plaintext Kafka.
    kafka_security: security.KafkaSecurity = field(default_factory=security.KafkaSecurity)

    # Every stage's HTTP port: open connections before new ones get 503, and the idle/header timeout.
    http_max_connections: int = 4096
    http_idle_timeout_s: float = 15.0
    lag_interval_s: float = 15.0
    instance_id: str = ""
    # A second port only this process listens on (same endpoints), so each of several workers behind a
    # shared port can be probed and scraped on its own (`whereby-pipeline supervise`).
    instance_port: int = 0
    # The whole stop of a process after SIGTERM (HTTP requests in flight, drain, flush, commit, closes);
    # the deploy files' grace periods are this plus a margin (pipeline/stage.py, tests/unit/test_deploy_grace.py).
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    # Liveness: `/healthz` answers 503 once a stage's loop has not completed a step (an empty poll counts)
    # for this long, so an orchestrator restarts a stuck consumer (pipeline/stage.py).
    liveness_stall_s: float = DEFAULT_LIVENESS_STALL_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> Self:
        """Read and validate this class's variables from `environ` (default: the process environment)
        over an optional .env file; a bad value raises ConfigError naming the variable."""
        merged = dict(_dotenv(dotenv)) if dotenv else {}
        merged.update(os.environ if environ is None else environ)
        env = _Reader(merged)
        values: dict[str, Any] = {}
        # Each class in the hierarchy reads its own part (`_read`), the common one first.
        for klass in reversed(cls.__mro__):
            read = klass.__dict__.get("_read")
            if read is not None:
                values.update(read.__func__(merged, env))
        return cls(**values)

    @staticmethod
    def _read(merged: Mapping[str, str], env: _Reader) -> dict[str, Any]:
        try:
            kafka_security = security.kafka_security_from_env(merged)
        except security.SecurityError as exc:
            raise _security_error(exc) from None
        replication_factor = env.integer("KAFKA_REPLICATION_FACTOR", 1, low=1, high=16)
        min_insync = env.integer("KAFKA_MIN_INSYNC_REPLICAS", 0, low=0, high=16)
        if min_insync > replication_factor:
            raise ConfigError(
                f"KAFKA_MIN_INSYNC_REPLICAS={min_insync} is above KAFKA_REPLICATION_FACTOR={replication_factor}: "
                "every acks=all write would be refused; lower it or raise the replication factor"
            )
        return {
            "kafka_bootstrap_servers": env.text("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            "kafka_connect_timeout_s": env.number("KAFKA_CONNECT_TIMEOUT_S", 30.0),
            "topic_raw": env.text("TOPIC_RAW", contract.TOPIC_RAW),
            "topic_enriched": env.text("TOPIC_ENRICHED", contract.TOPIC_ENRICHED),
            "topic_dimensions": env.text("TOPIC_DIMENSIONS", contract.TOPIC_DIMENSIONS),
            "topic_deadletter": env.text("TOPIC_DEADLETTER", contract.TOPIC_DEADLETTER),
            "topic_reconciliation": env.text("TOPIC_RECONCILIATION", contract.TOPIC_RECONCILIATION),
            "topic_partitions": env.integer("KAFKA_TOPIC_PARTITIONS", 6, low=1, high=10_000),
            "topic_replication_factor": replication_factor,
            "topic_min_insync_replicas": min_insync,
            "kafka_security": kafka_security,
            "http_max_connections": env.integer("HTTP_MAX_CONNECTIONS", 4096, low=1, high=1_000_000),
            "http_idle_timeout_s": env.number("HTTP_IDLE_TIMEOUT_S", 15.0),
            "lag_interval_s": env.number("CONSUMER_LAG_INTERVAL_S", 15.0),
            "instance_id": env.text("INSTANCE_ID", f"{socket.gethostname()}-{os.getpid()}"),
            "instance_port": env.port("INSTANCE_PORT", 0),
            "shutdown_timeout_s": _shutdown_timeout(env),
            "liveness_stall_s": env.number("LIVENESS_STALL_S", DEFAULT_LIVENESS_STALL_S, low=1.0),
        }

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments shared by every Kafka producer, consumer and admin client."""
        try:
            return self.kafka_security.client_kwargs()
        except security.SecurityError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True, kw_only=True)
class IngestSettings(CommonSettings):
    """The webhook receiver: Whereby's signing secrets, request limits, its port and worker count."""

    webhook_secrets: tuple[str, ...] = ()
    webhook_tolerance_s: int = 300
    webhook_max_bytes: int = 64 * 1024
    produce_timeout_s: float = 3.0
    max_in_flight: int = 2000
    # How long ingest waits for a webhook body once the headers are in (then 408).
    webhook_body_timeout_s: float = 5.0
    ingest_host: str = "0.0.0.0"
    ingest_port: int = 8080
    # Processes sharing INGEST_PORT (SO_REUSEPORT), started by `whereby-pipeline supervise`.
    ingest_workers: int = 1

    @staticmethod
    def _read(merged: Mapping[str, str], env: _Reader) -> dict[str, Any]:
        try:
            # Secrets may come from a mounted file too (<VARIABLE>_FILE).
            raw_secrets = security.secret(merged, "WHEREBY_WEBHOOK_SECRET")
        except security.SecurityError as exc:
            raise _security_error(exc) from None
        return {
            "webhook_secrets": tuple(s.strip() for s in raw_secrets.split(",") if s.strip()),
            "webhook_tolerance_s": env.integer("WEBHOOK_TOLERANCE_S", 300, low=1, high=MAX_WEBHOOK_TOLERANCE_S),
            "webhook_max_bytes": env.integer("WEBHOOK_MAX_BYTES", 64 * 1024, low=1024),
            "produce_timeout_s": env.number("PRODUCE_TIMEOUT_S", 3.0),
            "max_in_flight": env.integer("INGEST_MAX_IN_FLIGHT", 2000, low=1),
            "webhook_body_timeout_s": env.number("WEBHOOK_BODY_TIMEOUT_S", 5.0),
            "ingest_host": env.text("INGEST_HOST", "0.0.0.0"),
            "ingest_port": env.port("INGEST_PORT", 8080),
            "ingest_workers": env.integer("INGEST_WORKERS", 1, low=1, high=64),
        }

    def require_webhook_secrets(self) -> tuple[str, ...]:
        """The signing secrets, or a ConfigError telling the operator what to set (see `check_webhook_secrets`).

        Checked here, by the stage that verifies signatures, rather than in `from_env`: tools that read
        every setting (`Settings`) never use the secret and must not refuse to start over it.
        """
        check_webhook_secrets(self.webhook_secrets)
        return self.webhook_secrets


@dataclass(frozen=True, kw_only=True)
class EnrichSettings(CommonSettings):
    """The enrich consumer: its group, its port, where user ids come from and whether names are kept."""

    enrich_host: str = "127.0.0.1"
    enrich_port: int = 8081
    enrich_group: str = "whereby-enrich"
    enrich_instances: int = 1
    # Where enrich takes user ids from (pipeline/usersource.py), canonical text; "" when not set (then
    # `externalId`). Enrich records it on the dimensions topic at start; everything reads it from there.
    user_id_source: str = ""
    # Personal data (README, "Personal data"). False: enrich writes every display name as null.
    store_display_names: bool = True

    @staticmethod
    def _read(merged: Mapping[str, str], env: _Reader) -> dict[str, Any]:
        return {
            "enrich_host": env.text("ENRICH_HOST", "127.0.0.1"),
            "enrich_port": env.port("ENRICH_PORT", 8081),
            "enrich_group": env.text("ENRICH_GROUP", "whereby-enrich"),
            "enrich_instances": env.integer("ENRICH_INSTANCES", 1, low=1, high=64),
            "user_id_source": _user_id_source(env),
            "store_display_names": env.flag("STORE_DISPLAY_NAMES", True),
        }

    @property
    def desired_user_id_source(self) -> str:
        """USER_ID_SOURCE as this process wants it (the default, `externalId`, when not set)."""
        return self.user_id_source or usersource.DEFAULT_TEXT


@dataclass(frozen=True, kw_only=True)
class SinkSettings(CommonSettings):
    """The sink: ClickHouse, batching, the read API and SQL interface it hosts, its group and port."""

    sink_host: str = "127.0.0.1"
    sink_port: int = 8082
    sink_group: str = "whereby-sink"
    sink_instances: int = 1
    # Bearer token for the read API and usage page; required when SINK_HOST is not a loopback address.
    read_api_token: str = field(default="", repr=False)
    # Read API queries: stopped by ClickHouse after this long, run in this many threads of their own.
    read_query_timeout_s: float = 30.0
    read_query_threads: int = 4
    # ClickHouse's HTTP interface on the embedded store (sink/sqlhttp.py); SQL_PORT=0 turns it off.
    sql_host: str = "127.0.0.1"
    sql_port: int = 8123
    sql_query_timeout_s: float = 30.0
    sql_max_concurrent: int = 4
    sql_max_result_bytes: int = 64 * 1024 * 1024
    sql_max_query_bytes: int = 1024 * 1024
    clickhouse_url: str = ""
    clickhouse_database: str = "whereby"
    clickhouse_cluster: str = ""
    clickhouse_access: security.ClickHouseAccess = field(default_factory=security.ClickHouseAccess)
    sink_batch_rows: int = 10_000
    sink_batch_bytes: int = 16 * 1024 * 1024
    sink_batch_seconds: float = 1.0
    # A connection open longer than this is stale: shown as such, counted by a metric, alerted on.
    stale_connection_s: float = 6 * 3600.0
    # Days the sink keeps raw webhook bodies in `raw_archive` (a TTL set at sink start); 0 keeps them forever.
    raw_archive_retention_days: int = DEFAULT_RAW_ARCHIVE_RETENTION_DAYS

    @staticmethod
    def _read(merged: Mapping[str, str], env: _Reader) -> dict[str, Any]:
        try:
            read_api_token = security.secret(merged, "READ_API_TOKEN")
            data_dir = Path(env.text("PIPELINE_DATA_DIR", ".data")).resolve()
            clickhouse_url = security.secret(merged, "CLICKHOUSE_URL") or f"chdb://{data_dir / 'clickhouse'}"
            clickhouse_access = security.clickhouse_access_from_env(merged, clickhouse_url)
        except security.SecurityError as exc:
            raise _security_error(exc) from None
        if not clickhouse_url.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                f"CLICKHOUSE_URL must start with chdb://, http:// or https://, got {clickhouse_url.split('://')[0]!r}"
            )
        sink_instances = env.integer("SINK_INSTANCES", 1, low=1, high=64)
        if sink_instances > 1 and clickhouse_url.startswith("chdb://"):
            raise ConfigError(
                f"SINK_INSTANCES={sink_instances} needs a ClickHouse server: the embedded engine (chdb://) "
                "opens its directory in one process; set CLICKHOUSE_URL=http(s)://... or SINK_INSTANCES=1"
            )
        return {
            "sink_host": env.text("SINK_HOST", "127.0.0.1"),
            "sink_port": env.port("SINK_PORT", 8082),
            "sink_group": env.text("SINK_GROUP", "whereby-sink"),
            "sink_instances": sink_instances,
            "read_api_token": read_api_token,
            "read_query_timeout_s": env.number("READ_QUERY_TIMEOUT_S", 30.0),
            "read_query_threads": env.integer("READ_QUERY_THREADS", 4, low=1, high=64),
            "sql_host": env.text("SQL_HOST", "127.0.0.1"),
            "sql_port": env.port("SQL_PORT", 8123),
            "sql_query_timeout_s": env.number("SQL_QUERY_TIMEOUT_S", 30.0),
            "sql_max_concurrent": env.integer("SQL_MAX_CONCURRENT", 4, low=1, high=64),
            "sql_max_result_bytes": env.integer("SQL_MAX_RESULT_BYTES", 64 * 1024 * 1024, low=1024),
            "sql_max_query_bytes": env.integer("SQL_MAX_QUERY_BYTES", 1024 * 1024, low=1024, high=64 * 1024 * 1024),
            "clickhouse_url": clickhouse_url,
            "clickhouse_database": env.text("CLICKHOUSE_DATABASE", "whereby"),
            "clickhouse_cluster": env.text("CLICKHOUSE_CLUSTER", ""),
            "clickhouse_access": clickhouse_access,
            "sink_batch_rows": env.integer("SINK_BATCH_ROWS", 10_000, low=1),
            "sink_batch_bytes": env.integer("SINK_BATCH_BYTES", 16 * 1024 * 1024, low=1024),
            "sink_batch_seconds": env.number("SINK_BATCH_SECONDS", 1.0),
            "stale_connection_s": env.number("STALE_CONNECTION_S", 6 * 3600.0),
            "raw_archive_retention_days": env.integer(
                "RAW_ARCHIVE_RETENTION_DAYS", DEFAULT_RAW_ARCHIVE_RETENTION_DAYS, low=0, high=36_500
            ),
        }

    def clickhouse_connect_kwargs(self) -> dict[str, Any]:
        """`clickhouse_connect.get_client(**this)`: CLICKHOUSE_URL plus separate credentials and TLS trust."""
        return self.clickhouse_access.connect_kwargs(self.clickhouse_url)


@dataclass(frozen=True, kw_only=True)
class Settings(IngestSettings, EnrichSettings, SinkSettings):
    """Every setting: for the tools that span stages (`supervise`, `replay`, `forget`, `dims`, `report`,
    `reconcile`) and for tests. A stage's service takes its own class (a `Settings` is one of each)."""

    # Reconcile (`whereby-pipeline reconcile`): Whereby's API, and where the long-running mode (`--every`)
    # serves health and metrics.
    whereby_api: WherebyApi = field(default_factory=WherebyApi)
    reconcile_host: str = "127.0.0.1"
    reconcile_port: int = 8083
    # The key of the pseudonyms `forget` writes (pipeline/erasure.py); only `forget` needs it.
    erasure_key: str = field(default="", repr=False)

    @staticmethod
    def _read(merged: Mapping[str, str], env: _Reader) -> dict[str, Any]:
        return {
            "whereby_api": _whereby_api(merged, env),
            "reconcile_host": env.text("RECONCILE_HOST", "127.0.0.1"),
            "reconcile_port": env.port("RECONCILE_PORT", 8083),
            "erasure_key": _erasure_key(merged),
        }

    def require_erasure_key(self) -> str:
        """The pseudonym key for `forget`, or a ConfigError telling the operator what to set."""
        if not self.erasure_key:
            raise ConfigError(
                "ERASURE_KEY is not set: `forget` keys the pseudonyms it writes with it (so that nobody holding "
                "a list of externalIds can recompute them); set ERASURE_KEY or ERASURE_KEY_FILE to a random "
                "secret (e.g. `openssl rand -hex 32`) and keep it with the other secrets"
            )
        return self.erasure_key
