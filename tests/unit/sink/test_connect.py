"""TLS and secrets reach asyncpg the way libpq users expect; the password never sits in the DSN."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from agent.config import DatabaseSettings
from agent.sink.connect import connect_kwargs


def test_tls_settings_travel_in_the_dsn_query(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    db = DatabaseSettings(dsn="postgresql://ingest@db.internal/app?application_name=x", sslmode="verify-full",
                          sslrootcert=ca, statement_timeout_ms=1234)
    kw = connect_kwargs(db, db.dsn or "")
    query = parse_qs(urlsplit(kw["dsn"]).query)
    assert query["sslmode"] == ["verify-full"]
    assert query["sslrootcert"] == [str(ca)]
    assert query["application_name"] == ["x"]
    assert kw["server_settings"] == {"application_name": "hypertail"}  # nothing PgBouncer would refuse
    assert kw["statement_cache_size"] == 0  # no named prepared statement outlives a transaction
    assert "password" not in kw


def test_password_is_passed_separately(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    db = DatabaseSettings(dsn="postgresql://ingest@db/app", password_file=secret)
    kw = connect_kwargs(db, db.dsn or "")
    assert kw["password"] == "s3cret"
    assert "s3cret" not in kw["dsn"]
