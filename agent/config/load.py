"""Build :class:`~agent.config.settings.Settings` from a TOML file and the environment.

``HYPERTAIL_<SECTION>__<KEY>`` environment variables override the file. Any problem becomes a
:class:`~agent.errors.ConfigError` that names the TOML key path and the bad value (and the
environment variable, when it came from one); a password in the file is refused outright.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from agent.config.settings import CONFIG_ENV, ENV_PREFIX, Settings
from agent.errors import ConfigError


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", key=None, value=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", value=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}", value=str(path)) from None


def _loc_to_key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("schema" if part == "schema_" else part)
    return out


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).rstrip("_").upper() for p in loc)


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_errors(origin: str, exc: ValidationError) -> ConfigError:
    lines = []
    first_key: str | None = None
    first_value: object = None
    for err in exc.errors():
        key = _loc_to_key(tuple(err["loc"])) or "(top level)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        env_name = _env_name(err["loc"])
        if env_name in os.environ:
            msg += f" [from {env_name}]"
        if "password" in key:
            value = "***"
        lines.append(f"{origin}: {key}: {msg} (got {_shorten(value)})")
        if first_key is None:
            first_key, first_value = key, value
    return ConfigError("\n".join(lines), key=first_key, value=first_value)


def _reject_toml_secrets(data: Mapping[str, Any], origin: str) -> None:
    db = data.get("database")
    if not isinstance(db, Mapping):
        return
    if "password" in db:
        raise ConfigError(
            f"{origin}: database.password: secrets must not be in the config file; use "
            "database.password_file, HYPERTAIL_DATABASE__PASSWORD or PGPASSWORD",
            key="database.password",
            value="***",
        )
    dsn = db.get("dsn")
    if isinstance(dsn, str) and urlsplit(dsn).password:
        raise ConfigError(
            f"{origin}: database.dsn: contains a password; remove it from the file and use "
            "database.password_file, HYPERTAIL_DATABASE__PASSWORD or PGPASSWORD",
            key="database.dsn",
            value=mask_dsn(dsn),
        )


def load_settings(path: Path | str | None = None) -> Settings:
    """Load the TOML file at ``path`` (or ``$HYPERTAIL_CONFIG``), then apply the environment.

    Raises :class:`ConfigError` naming the key path and the bad value on any problem.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        p = Path(path)
        data = _read_toml(p)
        origin = str(p)
        _reject_toml_secrets(data, origin)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise _format_errors(origin, exc) from None


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for logs, status and errors)."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return dsn.replace(parts.netloc, f"{user}:***@{hostinfo}", 1)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as plain data with secrets masked (for ``check-config``)."""
    data = settings.model_dump(mode="json", by_alias=True)
    db = data["database"]
    if db.get("password"):
        db["password"] = "***"
    if db.get("dsn"):
        db["dsn"] = mask_dsn(db["dsn"])
    return data
