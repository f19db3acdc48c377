"""Pure logic of the TimescaleDB mode choice and of error classification (issue 9)."""

from __future__ import annotations

import asyncpg
import pytest

from agent.errors import RetryableError, StallError
from agent.sink.classify import classify, one_line
from agent.sink.schema import PRELOAD_LINE, TimescaleProbe, unavailable_reason


def test_an_installed_extension_is_always_usable() -> None:
    assert unavailable_reason(TimescaleProbe(installed="2.25.2", available="2.25.2", preloaded=False)) is None


def test_available_and_preloaded_is_usable() -> None:
    assert unavailable_reason(TimescaleProbe(installed=None, available="2.25.2", preloaded=True)) is None


def test_not_preloaded_names_the_postgresql_conf_line() -> None:
    reason = unavailable_reason(TimescaleProbe(installed=None, available="2.25.2", preloaded=False))
    assert reason is not None and "not preloaded" in reason and PRELOAD_LINE in reason and "postgresql.conf" in reason


def test_not_installed_says_so() -> None:
    reason = unavailable_reason(TimescaleProbe(installed=None, available=None, preloaded=False))
    assert reason is not None and "not installed" in reason


def _server_error(cls: type[asyncpg.PostgresError], message: str, **fields: str) -> asyncpg.PostgresError:
    return cls.new({"M": message, **fields})  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("cls", "sqlstate"),
    [
        (asyncpg.FeatureNotSupportedError, "0A000"),
        (asyncpg.InsufficientPrivilegeError, "42501"),
        (asyncpg.UndefinedTableError, "42P01"),
        (asyncpg.InvalidSchemaNameError, "3F000"),
        (asyncpg.RaiseError, "P0001"),
    ],
)
def test_errors_retrying_cannot_fix_stall(cls: type[asyncpg.PostgresError], sqlstate: str) -> None:
    err = classify(_server_error(cls, "refused", C=sqlstate))
    assert isinstance(err, StallError) and err.sqlstate == sqlstate


def test_transient_errors_still_retry() -> None:
    assert isinstance(classify(_server_error(asyncpg.AdminShutdownError, "bye", C="57P01")), RetryableError)
    assert isinstance(classify(ConnectionResetError("reset")), RetryableError)


def test_one_line_carries_sqlstate_message_detail_and_hint() -> None:
    exc = _server_error(asyncpg.FeatureNotSupportedError, "cannot add column", C="0A000", D="a detail", H="a hint")
    text = one_line(exc)
    assert text == "0A000 cannot add column; detail: a detail; hint: a hint"
    assert "\n" not in one_line(ConnectionRefusedError(111, "Connection refused"))
