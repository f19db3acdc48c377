"""The ``hypertail`` command line.

Every subcommand returns an exit code: 0 success, 1 runtime failure, 2 configuration or usage
error (with a message that names the key and the bad value).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.config import CONFIG_ENV, Settings, effective_config, load_settings, mask_dsn
from agent.errors import ConfigError, HypertailError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2

DESCRIPTION = """\
hypertail tails the JSON log lines your application writes (one object per line, as structlog's
JSONRenderer writes them) and COPY-batches them into PostgreSQL/TimescaleDB tables in schema
`observability`, exactly once: every line becomes one row, or one dead letter that says why.
"""

EPILOG = f"""\
configuration:
  A TOML file given with --config or ${CONFIG_ENV}. Any key can be overridden from the
  environment as HYPERTAIL_<SECTION>__<KEY>, e.g. HYPERTAIL_DATABASE__DSN or
  HYPERTAIL_BATCH__MAX_AGE_MS=100. The database password never goes into the file: use
  database.password_file, HYPERTAIL_DATABASE__PASSWORD or PGPASSWORD.

examples:
  hypertail check-config config.toml         validate a config and print it, secrets masked
  hypertail migrate --config config.toml     create or upgrade the tables (idempotent)
  hypertail migrate --dsn postgresql://admin@db/app
  hypertail migrate --print-grants ingest    least-privilege GRANTs for the agent's role

Exit codes: 0 ok, 1 failure, 2 invalid configuration or usage.
"""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="hypertail", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"hypertail {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    cc = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective configuration",
        description="Load PATH, apply HYPERTAIL_* environment overrides and print the effective "
        "configuration as JSON with secrets masked. Exit 2 with a message naming the key on error.",
        formatter_class=fmt,
    )
    cc.add_argument("path", type=Path, metavar="PATH", help="the TOML config file")
    cc.set_defaults(func=cmd_check_config)

    mg = sub.add_parser(
        "migrate",
        help="apply schema.sql (idempotent) and print the storage mode",
        description="Create or upgrade the observability and hypertail schemas. With TimescaleDB the "
        "tables become hypertables with compression and retention policies; without it they are "
        "plain tables with BRIN indexes. Safe to run again.",
        formatter_class=fmt,
    )
    src = mg.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, metavar="PATH", help=f"config file (default: ${CONFIG_ENV})")
    src.add_argument("--dsn", metavar="DSN", help="a postgresql:// URI, instead of a config file")
    mg.add_argument(
        "--print-grants",
        metavar="ROLE",
        help="print the least-privilege GRANT statements for ROLE (the agent's login) and exit; "
        "connects to nothing",
    )
    mg.set_defaults(func=cmd_migrate)
    return p


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.path)
    print(json.dumps(effective_config(settings), indent=2, sort_keys=True))
    if not settings.sources:
        print("warning: no [[sources]] configured: nothing will be tailed", file=sys.stderr)
    return EXIT_OK


def _settings_for_migrate(args: argparse.Namespace) -> Settings:
    if args.dsn:
        settings = load_settings(None)
        db = settings.database.model_copy(update={"dsn": args.dsn})
        return settings.model_copy(update={"database": db})
    return load_settings(args.config)


def cmd_migrate(args: argparse.Namespace) -> int:
    from agent.sink.schema import grants_for

    if args.print_grants:
        print(grants_for(args.print_grants), end="")
        return EXIT_OK
    settings = _settings_for_migrate(args)
    mode = asyncio.run(_migrate(settings))
    print(f"schema applied: {mode}")
    return EXIT_OK


async def _migrate(settings: Settings) -> str:
    from agent.sink.connect import connect
    from agent.sink.schema import apply_schema

    dsn = settings.database.dsn or _embedded_dsn(settings)
    conn = await connect(settings.database, dsn)
    try:
        mode = await apply_schema(conn, settings.schema_)
    finally:
        await conn.close()
    return f"{mode.describe()} (server {mode.server_version}, database {mask_dsn(dsn)})"


def _embedded_dsn(settings: Settings) -> str:
    from agent.embedded import start_embedded

    return start_embedded(settings.agent.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"hypertail: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except HypertailError as exc:
        print(f"hypertail: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"hypertail: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
