"""`whereby-pipeline config check --stage NAME`: the stage's own start-up rules, run without starting it.

The command and the services must share one function per stage (no second copy of a rule), so the
tests check both ends: the command finds each stage's check, and each service refuses to start
through that same function."""

from __future__ import annotations

from pathlib import Path

import pytest

import enrich.config
import ingest.config
import sink.config
from enrich.service import EnrichService
from ingest.service import IngestService
from pipeline import checks, cli
from pipeline.settings import ConfigError, Settings
from sink.service import SinkService

SECRET = "a-webhook-secret-of-some-length"
TOKEN = "a-read-api-token-of-some-length"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A working directory without .env and an environment without any setting of ours."""
    monkeypatch.chdir(tmp_path)
    for name in ("WHEREBY_WEBHOOK_SECRET", "READ_API_TOKEN", "SINK_HOST", "KAFKA_SECURITY_PROTOCOL", "CLICKHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    return monkeypatch


def command(*argv: str) -> int:
    with pytest.raises(SystemExit) as done:
        cli.main(["config", "check", *argv])
    return int(done.value.code or 0)


def test_every_stage_offers_the_function_its_service_runs() -> None:
    assert checks.available() == {
        "ingest": ingest.config.check,
        "enrich": enrich.config.check,
        "sink": sink.config.check,
    }


def test_ok_for_a_stage_that_would_start(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("WHEREBY_WEBHOOK_SECRET", SECRET)
    assert command("--stage", "ingest") == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.parametrize(
    ("stage", "env", "says"),
    [
        pytest.param("ingest", {}, "WHEREBY_WEBHOOK_SECRET is not set", id="ingest-without-secret"),
        pytest.param("sink", {"SINK_HOST": "0.0.0.0"}, "set READ_API_TOKEN", id="sink-exposed-without-token"),
        pytest.param("enrich", {"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", id="settings-parse"),
        pytest.param(
            "enrich",
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "{garbage}"},
            "cannot load Kafka TLS files",
            id="tls-file-does-not-load",
        ),
    ],
)
def test_the_one_line_error_and_a_non_zero_exit(
    stage: str, env: dict[str, str], says: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = Path("garbage.pem")
    garbage.write_text("not a certificate\n")
    for name, value in env.items():
        clean_env.setenv(name, value.format(garbage=garbage.resolve()))
    assert command("--stage", stage) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert says in err and err.count("\n") == 1, err


def test_all_reports_each_stage(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("WHEREBY_WEBHOOK_SECRET", SECRET)
    clean_env.setenv("SINK_HOST", "0.0.0.0")
    assert command("--stage", "all") == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == ["enrich: ok", "ingest: ok"]
    assert err.startswith("sink: SINK_HOST=0.0.0.0 exposes the read API") and err.count("\n") == 1
    clean_env.setenv("READ_API_TOKEN_FILE", str(Path("token").resolve()))
    Path("token").write_text(TOKEN + "\n")
    assert command("--stage", "all") == 0


def test_the_dotenv_file_counts_as_it_does_at_start(clean_env: pytest.MonkeyPatch) -> None:
    Path(".env").write_text(f"WHEREBY_WEBHOOK_SECRET={SECRET}\n")
    assert command("--stage", "ingest") == 0


async def test_the_services_refuse_to_start_through_the_same_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap each stage's check for one that refuses: the service must stop on it, before any network."""
    calls: list[str] = []

    def refusing(stage: str):  # type: ignore[no-untyped-def]
        def check(settings: Settings) -> None:
            calls.append(stage)
            raise ConfigError(f"{stage} refused")

        return check

    for module in (ingest.config, enrich.config, sink.config):
        monkeypatch.setattr(module, "check", refusing(module.__name__.split(".")[0]))
    settings = Settings.from_env({"WHEREBY_WEBHOOK_SECRET": SECRET, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    with pytest.raises(ConfigError, match="ingest refused"):
        IngestService(settings)
    with pytest.raises(ConfigError, match="enrich refused"):
        await EnrichService(settings).start()
    with pytest.raises(ConfigError, match="sink refused"):
        await SinkService(settings).start()
    assert calls == ["ingest", "enrich", "sink"]
