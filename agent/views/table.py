"""Plain-text tables that fit a terminal, and stay whole in a pipe.

Given a width (a terminal's), a table keeps its columns whole and readable: a column marked
``shrink`` (free text: a name, a path, a reason) is cut first, with one ``…`` and never below
its ``shrink`` width, then whole columns are left out, lowest ``keep`` first; the caller says
which (:attr:`Fitted.hidden`), so nothing disappears silently. Without a width (a pipe or a
file) every column is printed whole, one row per line, for ``grep`` and ``awk``. Widths are
terminal cells (``rich.cells``), so wide characters line up too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size

GAP = "  "
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Column:
    """A column: its header, alignment, and how it gives way on a narrow terminal."""

    name: str
    right: bool = False  # numbers: aligned right
    keep: int = 0  # when columns must go, the lowest ``keep`` goes first
    shrink: int | None = None  # free text that may be cut (with one …) down to this many cells
    cut_left: bool = False  # cut the start, keep the end (a path: its file name)


@dataclass(frozen=True, slots=True)
class Fitted:
    """The table's lines (the header first when there is one) and the columns left out."""

    lines: list[str]
    hidden: list[str]


def cut(text: str, width: int, *, left: bool = False) -> str:
    """``text`` in at most ``width`` cells, one ``…`` marking what was cut."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    if left:
        kept = text[-(width - 1):]
        while cell_len(kept) > width - 1:
            kept = kept[1:]
        return ELLIPSIS + kept
    return set_cell_size(text, width - 1).rstrip() + ELLIPSIS


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None, *,
        header: bool = True, indent: str = "") -> Fitted:
    """Lay ``rows`` out under ``columns`` within ``width`` cells (None: no limit)."""
    natural = [max([cell_len(c.name) if header else 0] + [cell_len(r[i]) for r in rows])
               for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    widths = list(natural)
    while width is not None and _total(widths, shown, indent) > width:
        widths = _shrunk(columns, natural, shown, width - cell_len(indent))
        if _total(widths, shown, indent) <= width or len(shown) == 1:
            break
        shown.remove(min(shown, key=lambda i: (columns[i].keep, -i)))
        widths = list(natural)
    if width is not None:
        shown, widths = _take_back(columns, natural, shown, width, indent)
    hidden = [c.name for i, c in enumerate(columns) if i not in shown]
    table = [[c.name for c in columns]] if header else []
    lines = [_line(columns, widths, shown, row, indent) for row in [*table, *rows]]
    return Fitted(lines, hidden)


def _take_back(columns: Sequence[Column], natural: list[int], shown: list[int], width: int,
               indent: str) -> tuple[list[int], list[int]]:
    """Columns left out while wider ones went, taken back (highest ``keep`` first) if they fit now."""
    widths = _shrunk(columns, natural, shown, width - cell_len(indent))
    for i in sorted(set(range(len(columns))) - set(shown), key=lambda i: -columns[i].keep):
        trial = sorted([*shown, i])
        trial_widths = _shrunk(columns, natural, trial, width - cell_len(indent))
        if _total(trial_widths, trial, indent) <= width:
            shown, widths = trial, trial_widths
    return shown, widths


def _total(widths: list[int], shown: list[int], indent: str) -> int:
    return cell_len(indent) + sum(widths[i] for i in shown) + len(GAP) * (len(shown) - 1)


def _shrunk(columns: Sequence[Column], natural: list[int], shown: list[int], room: int) -> list[int]:
    """Natural widths, with the shrinkable shown columns cut (widest first) until they fit."""
    widths = list(natural)
    excess = sum(widths[i] for i in shown) + len(GAP) * (len(shown) - 1) - room
    flexible = sorted((i for i in shown if columns[i].shrink is not None), key=lambda i: -widths[i])
    for i in flexible:
        if excess <= 0:
            break
        floor = min(natural[i], columns[i].shrink or 0)
        give = min(excess, widths[i] - floor)
        widths[i] -= give
        excess -= give
    return widths


def _line(columns: Sequence[Column], widths: list[int], shown: list[int], row: Sequence[str], indent: str) -> str:
    cells = []
    for i in shown:
        c, w = columns[i], widths[i]
        text = cut(row[i], w, left=c.cut_left)
        pad = " " * (w - cell_len(text))
        cells.append(pad + text if c.right else text + pad)
    return (indent + GAP.join(cells)).rstrip()
