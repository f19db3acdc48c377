"""The exception tree, organised by what the caller must do about an error.

* :class:`ConfigError` - the operator must fix the configuration; the CLI exits 2.
* :class:`RetryableError` - wait and try again (database down, timeout, deadlock...).
* :class:`DataError` - the rows are at fault; split the batch and dead-letter the culprits.
* :class:`StallError` - a human must act (privileges, missing table); stop ingesting, stay alive.
"""

from __future__ import annotations


class HypertailError(Exception):
    """Base of every error hypertail raises on purpose."""


class ConfigError(HypertailError):
    """The configuration is invalid. ``key`` is the dotted TOML path, ``value`` the bad value."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        self.key = key
        self.value = value
        super().__init__(message)


class SchemaError(HypertailError):
    """The database schema is missing or does not match what this agent writes."""


class CommandError(HypertailError):
    """A command's database work failed; the message is one line (SQLSTATE, message, hint)."""


class SinkError(HypertailError):
    """Base of database-side failures, already classified by the sink."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class RetryableError(SinkError):
    """Transient: connection loss, shutdown, too many connections, timeouts, deadlocks."""


class DataError(SinkError):
    """The data of one or more rows was refused; the batch must be split."""


class StallError(SinkError):
    """Privileges, authentication or a missing object: retrying cannot help until a human acts."""
