"""The ``hypertail`` command line.

Every subcommand returns an exit code: 0 success, 1 runtime failure, 2 configuration or usage
error (with a message that names the key and the bad value); ``check-config --connect`` adds
codes that say which check failed. :mod:`agent.cli.parser` defines the arguments,
:mod:`agent.cli.commands` what each subcommand does, :mod:`agent.cli.embedded` the ``embedded``
tool, :mod:`agent.cli.status` the ``status`` report, :mod:`agent.cli.check` the connecting
checks, :mod:`agent.cli.deadletters` and :mod:`agent.cli.replay` the dead-letter tool, and
:mod:`agent.cli.output` how output meets a terminal or a pipe.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Sequence

from agent.cli.commands import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from agent.cli.output import note, quiet_pipe
from agent.cli.parser import build_parser
from agent.errors import ConfigError, HypertailError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; errors the user can fix are printed in one line, not as a traceback.

    A reader of stdout that went away (``| head -3``) ends the command quietly with exit 0.
    """
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a broken pipe shows here, not as a message at the interpreter's exit
        return code
    except BrokenPipeError as exc:
        if _stdout_reader_gone():
            quiet_pipe()
            return EXIT_OK
        note(f"hypertail: {exc}")
        return EXIT_FAIL
    except ConfigError as exc:
        note(f"hypertail: config error: {exc}")
        return EXIT_CONFIG
    except HypertailError as exc:
        note(f"hypertail: {exc}")
        return EXIT_FAIL
    except OSError as exc:
        note(f"hypertail: {exc}")
        return EXIT_FAIL


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed (poll reports an error on our end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events)
