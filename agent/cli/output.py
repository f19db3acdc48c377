"""How the commands write to the terminal or a pipe: widths, notes on stderr, a closed pipe.

* A table or a waterfall fits the terminal it is printed on (``COLUMNS`` overrides its size); printed
  into a pipe or a file, a table has no width limit (whole values, one row per line, for
  ``grep`` and ``awk``) and the waterfall, which needs a width, uses 80 columns.
* A reader that goes away (``hypertail trace ID | head -3``) is not an error: :func:`quiet_pipe`
  points stdout at ``/dev/null`` so nothing more is written, and the command exits 0, as Unix
  tools do.
* Notes for the user go to stderr through :func:`note`, which never raises: the agent writes
  them while it runs, and its stderr may be a closed pipe too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from typing import Any

PIPE_WIDTH = 80  # a waterfall printed into a pipe or file


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int | None:
    """The width to fit tables to on a terminal (``COLUMNS`` overrides its size); None in a pipe or
    a file, whatever ``COLUMNS`` says: the reader there is a program, which wants whole rows."""
    if not stdout_is_terminal():
        return None
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


def drawing_width(asked: int | None) -> int:
    """The width a waterfall is drawn at: ``--width``, else the table width, else 80."""
    return asked or terminal_width() or PIPE_WIDTH


def note(text: str) -> None:
    """One line for the user on stderr; lost quietly if stderr is gone."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def quiet_pipe() -> None:
    """The reader of stdout went away: send whatever is still buffered, and anything later, to
    /dev/null, so that neither this command nor the interpreter's exit reports a broken pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def print_styled(lines: list[tuple[str, str]]) -> None:
    """Print ``(text, style)`` lines: styled by rich on a terminal (``NO_COLOR`` honoured), plain
    text in a pipe; never wrapped nor cut (the lines were fitted already)."""
    if not stdout_is_terminal():
        for text, _ in lines:
            print(text)
        return
    from rich.text import Text

    out = console(soft_wrap=True)
    for text, style in lines:
        out.print(Text(text, style=style))


def console(**options: Any) -> Any:
    """A rich ``Console`` that leaves a closed pipe to :func:`agent.cli.main` (rich's own answer
    is ``exit 1``; a Unix tool's is a quiet ``exit 0``)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(32, "Broken pipe")

    return _Console(highlight=False, **options)


def wrapped(lines: list[str], width: int | None) -> list[str]:
    """Prose lines broken between words to ``width`` (continuations indented under their line's
    text); unchanged without a width (a pipe: one line per item, for grep)."""
    if width is None:
        return lines
    import textwrap

    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()))
        out += textwrap.wrap(line, width, subsequent_indent=indent + "    ", break_on_hyphens=False) or [""]
    return out
