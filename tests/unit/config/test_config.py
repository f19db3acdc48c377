"""Config loading: strict keys, precise errors, environment beats file, the example loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import SchemaSettings, effective_config, load_settings, mask_dsn
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
BASE = """
[database]
dsn = "postgresql://ingest@db.internal:5432/app"

[[sources]]
name = "app"
paths = ["/var/log/app/*.log"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_example_config_loads_and_round_trips(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config.example.toml")
    assert settings.sources[0].name == "app"
    assert settings.batch.max_age_ms == 200
    dumped = settings.model_dump(mode="json", by_alias=True)
    assert load_settings(write(tmp_path, _to_toml(dumped))) == settings


def _to_toml(data: dict[str, object]) -> str:
    """A tiny TOML writer for the round trip (values are str/int/float/bool/list/None)."""
    import json

    out: list[str] = []
    for section, body in data.items():
        rows = body if isinstance(body, list) else [body]
        for row in rows:
            out.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            for key, value in row.items():
                if value is not None:
                    out.append(f"{key} = {json.dumps(value)}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(
    ("snippet", "key", "words"),
    [
        ("[batch]\nmax_rowz = 10\n", "batch.max_rowz", "unknown key"),
        ("[batch]\nmax_rows = \"many\"\n", "batch.max_rows", "integer"),
        ("[[sources]]\nname = \"b\"\npaths = []\n", "sources[1].paths", "at least 1"),
        ("[[sources]]\nname = \"b\"\npaths = [\"x\"]\nstart_at = \"middle\"\n", "sources[1].start_at", "middle"),
        ("[[sources]]\nname = \"b\"\npaths = [\"x\"]\nformat = \"otlp-json\"\n", "sources[1].format",
         "'structlog' or 'otlp_json'"),
        ("[[sources]]\nname = \"b\"\npaths = [\"x\"]\nformt = \"otlp_json\"\n", "sources[1].formt", "unknown key"),
        ("[http]\nlisten = \"localhost\"\n", "http.listen", "host:port"),
        ("[http]\nlisten = \"0.0.0.0:99999\"\n", "http.listen", "99999"),
    ],
)
def test_bad_values_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], snippet: str, key: str, words: str
) -> None:
    path = write(tmp_path, BASE + snippet)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert key in err and words in err and str(path) in err


def test_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE + "[batch]\nmax_age_ms = 500\nmax_rows = 10\n")
    monkeypatch.setenv("HYPERTAIL_BATCH__MAX_AGE_MS", "75")
    monkeypatch.setenv("HYPERTAIL_DATABASE__DSN", "postgresql://other@elsewhere/db")
    settings = load_settings(path)
    assert settings.batch.max_age_ms == 75
    assert settings.batch.max_rows == 10  # the rest of the section still comes from the file
    assert settings.database.dsn == "postgresql://other@elsewhere/db"


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERTAIL_HTTP__LISTEN", "nowhere")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, BASE))
    assert info.value.key == "http.listen"
    assert "HYPERTAIL_HTTP__LISTEN" in str(info.value)


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERTAIL_CONFIG", str(write(tmp_path, BASE)))
    assert load_settings().sources[0].paths == ["/var/log/app/*.log"]


def test_password_in_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, BASE.replace("ingest@", "ingest:hunter2@")))
    assert info.value.key == "database.dsn"
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match=r"database\.password"):
        load_settings(write(tmp_path, BASE.replace("[database]\n", '[database]\npassword = "hunter2"\n')))


def test_password_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    text = BASE.replace("[database]\n", f'[database]\npassword_file = "{secret}"\n')
    assert load_settings(write(tmp_path, text)).database.resolved_password() == "s3cret"
    monkeypatch.setenv("HYPERTAIL_DATABASE__PASSWORD", "fromenv")
    settings = load_settings(write(tmp_path, BASE))
    assert settings.database.resolved_password() == "fromenv"
    assert "fromenv" not in str(effective_config(settings))


def test_check_config_prints_masked_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYPERTAIL_DATABASE__DSN", "postgresql://u:canary-pw@h/db")
    assert main(["check-config", str(write(tmp_path, BASE))]) == 0
    out = capsys.readouterr().out
    assert "canary-pw" not in out and "u:***@h" in out


def test_check_config_accepts_an_otlp_json_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    otel = '[[sources]]\nname = "otel"\npaths = ["/var/log/app/*.jsonl"]\nformat = "otlp_json"\n'
    path = write(tmp_path, BASE + otel)
    assert [s.format for s in load_settings(path).sources] == ["structlog", "otlp_json"]  # default, then given
    assert main(["check-config", str(path)]) == 0
    assert '"format": "otlp_json"' in capsys.readouterr().out


def test_missing_and_invalid_toml_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["check-config", str(write(tmp_path, "[batch\n"))]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_duplicate_source_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repeated: app"):
        load_settings(write(tmp_path, BASE + '[[sources]]\nname = "app"\npaths = ["b"]\n'))


def test_mask_dsn() -> None:
    assert mask_dsn("postgresql://a:b@h:5/d?x=1") == "postgresql://a:***@h:5/d?x=1"
    assert mask_dsn("postgresql://a@h/d") == "postgresql://a@h/d"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "hypertail" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "check-config" in out and "HYPERTAIL_" in out


def test_schema_section_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[schema] sits behind an alias (``schema`` shadows a pydantic attribute); its
    HYPERTAIL_SCHEMA__* variables must still work, and merge with the file's section."""
    path = write(tmp_path, BASE + "[schema]\nretention_days = 5\n")
    monkeypatch.setenv("HYPERTAIL_SCHEMA__TIMESCALEDB", "require")
    settings = load_settings(path)
    assert (settings.schema_.timescaledb, settings.schema_.retention_days) == ("require", 5)
    monkeypatch.setenv("HYPERTAIL_SCHEMA__TIMESCALEDB", "sometimes")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "schema.timescaledb"
    assert "HYPERTAIL_SCHEMA__TIMESCALEDB" in str(info.value) and "sometimes" in str(info.value)


def test_log_level_format_and_progress_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE + '[agent]\nlog_level = "debug"\nlog_format = "json"\n[ops]\nprogress_interval_s = 0\n')
    s = load_settings(path)
    assert (s.agent.log_level, s.agent.log_format, s.ops.progress_interval_s) == ("debug", "json", 0)
    monkeypatch.setenv("HYPERTAIL_AGENT__LOG_LEVEL", "warning")
    assert load_settings(path).agent.log_level == "warning"
    monkeypatch.setenv("HYPERTAIL_AGENT__LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "agent.log_level" in str(info.value) and "HYPERTAIL_AGENT__LOG_LEVEL" in str(info.value)
    monkeypatch.delenv("HYPERTAIL_AGENT__LOG_LEVEL")
    with pytest.raises(ConfigError, match=r"ops\.progress_interval_s"):
        load_settings(write(tmp_path, BASE + "[ops]\nprogress_interval_s = -1\n"))


def test_metrics_and_workflows_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """schema.metrics_retention_days and schema.workflows_retention_days (issue 26): defaults, file,
    environment, and a bound that names the key."""
    assert (SchemaSettings().metrics_retention_days, SchemaSettings().workflows_retention_days) == (90, 365)
    path = write(tmp_path, BASE + "[schema]\nmetrics_retention_days = 30\n")
    monkeypatch.setenv("HYPERTAIL_SCHEMA__WORKFLOWS_RETENTION_DAYS", "400")
    settings = load_settings(path)
    assert (settings.schema_.metrics_retention_days, settings.schema_.workflows_retention_days) == (30, 400)
    monkeypatch.setenv("HYPERTAIL_SCHEMA__WORKFLOWS_RETENTION_DAYS", "0")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "schema.workflows_retention_days"
