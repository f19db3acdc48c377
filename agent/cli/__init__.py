"""The ``hypertail`` command line.

Every subcommand returns an exit code: 0 success, 1 runtime failure, 2 configuration or usage
error (with a message that names the key and the bad value). :mod:`agent.cli.parser` defines
the arguments, :mod:`agent.cli.commands` what each subcommand does, :mod:`agent.cli.embedded`
the ``embedded`` tool and :mod:`agent.cli.status` the ``status`` report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent.cli.commands import EXIT_CONFIG, EXIT_FAIL
from agent.cli.parser import build_parser
from agent.errors import ConfigError, HypertailError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors the user can fix are printed in one line, not as a traceback."""
    args = build_parser().parse_args(argv)
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
