"""Values that cross stage boundaries: sources -> parse -> batch -> sink.

A stage hands a value on and never changes it afterwards, so neither side worries about the
other mutating it: the types are immutable, except the lists inside a :class:`Block`, which
nobody changes once the block is made. The three made once per line (:class:`Line`,
:class:`Row`, :class:`Item`) are typed ``NamedTuple`` s rather than frozen dataclasses: a frozen
dataclass pays ``object.__setattr__`` per field (~420 ns to build a Line, measured) where a
NamedTuple costs ~110 ns, and at hundreds of thousands of lines a second that was most of the
tailing stage's time. Even that is per line, so the sources hand lines over as one
:class:`Block` per read, and the runner builds its per-line values from a block in C-level
``map`` calls. The rest are frozen, slotted dataclasses. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import islice, repeat
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Who a file is, independent of its path.

    ``(dev, ino)`` alone is not enough: inodes are reused after deletion, so a fingerprint of the
    first ``fingerprint_len`` bytes (a hex digest) tells a new file on an old inode apart. A file
    shorter than the fingerprint window is fingerprinted over what it has; ``fingerprint_len`` says
    how much that was so the comparison can be repeated once it grows.
    """

    dev: int
    ino: int
    fingerprint: str
    fingerprint_len: int
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The stable text key used in checkpoints, dead letters and deterministic ids; computed
        # once because it is read for every line.
        object.__setattr__(self, "key", f"{self.dev}:{self.ino}:{self.fingerprint[:16]}")


@dataclass(frozen=True, slots=True)
class FileRef:
    """A tailed file as the later stages see it: identity plus labels."""

    source: str
    path: str
    identity: FileIdentity


NUL_RUN = b"\x00"
"""``Line.data`` of a Line (``oversize=True``) that stands for a run of NUL bytes, not a line:
``start``/``end`` span the run. No real oversize Line carries it, since NUL bytes end lines."""


class Line(NamedTuple):
    """One complete line: the bytes between ``start`` and ``end`` of ``file``.

    ``data`` has its terminating newline, a trailing CR and (at offset 0) a UTF-8 BOM removed.
    ``end`` is the offset just after the newline, so committing ``end`` consumes the line.
    ``oversize`` lines carry only a prefix of their bytes; they become dead letters.
    """

    file: FileRef
    start: int
    end: int
    data: bytes
    oversize: bool = False


class Block(NamedTuple):
    """Consecutive complete lines of one file, from one read: what the sources hand over.

    Line ``i`` has the bytes ``data[i]`` (cleaned as :class:`Line` says) and spans
    ``bounds[i]`` to ``bounds[i + 1]``, so ``bounds`` has one entry more than ``data`` and the
    offsets stay exact without an object per line. An ``oversize`` block holds exactly one line,
    an oversize line's prefix or a NUL run (:data:`NUL_RUN`).

    ``tail`` is the tail hash of :attr:`end` (see :class:`Checkpoint`), taken by the sources from
    the bytes they read: a checkpoint at the block's end carries it, so committing never goes
    back to the file. ``""`` (unknown) for a block cut out of another (:meth:`part`).
    """

    file: FileRef
    bounds: list[int]
    data: list[bytes]
    oversize: bool = False
    tail: str = ""

    @property
    def start(self) -> int:
        return self.bounds[0]

    @property
    def end(self) -> int:
        """The offset just after the block's last line: committing it consumes the block."""
        return self.bounds[-1]

    def lines(self) -> list[Line]:
        """The block as one :class:`Line` per line (built in C; the runner's items hold them)."""
        b = self.bounds
        return list(map(_new_line, zip(repeat(self.file), b, islice(b, 1, None), self.data, repeat(self.oversize))))

    def part(self, i: int, j: int) -> Block:
        """Lines ``i`` to ``j`` (exclusive) as a block of their own (the tail kept if it ends ours)."""
        tail = self.tail if j == len(self.data) else ""
        return Block(self.file, self.bounds[i : j + 1], self.data[i:j], self.oversize, tail)


# A Line from a ready tuple in C, skipping the NamedTuple's Python-level __new__.
_new_line = partial(tuple.__new__, Line)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the sink committed for one file identity, and what sources resume from.

    ``tail_hash`` is a digest of up to 64 bytes just before ``offset``; if the bytes there differ
    after a restart, the file was rewritten in place and is read again from the start.
    """

    identity: FileIdentity
    path: str
    source: str
    offset: int
    tail_hash: str


class Row(NamedTuple):
    """A typed row for one ``observability`` table, in the column order of ``contract.COLUMNS``.

    ``merge`` is true for records that must be merged with another record of the same key
    (trace start/end, span start); plain rows are COPYed. ``warnings`` names optional fields that
    were invalid and kept only in ``metadata``.
    """

    table: str
    values: tuple[Any, ...]
    merge: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A line that cannot become a row, and why (reason names field, expectation and value)."""

    reason: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class AppLog:
    """An ordinary application log line (no discriminator key): not a record.

    ``fields`` is the decoded line, handed on so that a source that stores its log lines builds
    the ``logs`` row (:mod:`agent.parse.applogs`) without decoding the line a second time.
    """

    level: str | None = None
    fields: dict[str, Any] | None = field(default=None, compare=False, repr=False)


class Rows(NamedTuple):
    """The rows of one line that holds many records: an OTLP batch (spans, log records, metric
    data points). The line is still the unit of exactly-once: all its rows commit in the
    transaction that moves its file's checkpoint past it, or none do, and a line whose rows the
    database refuses becomes one dead letter.

    ``dead`` says what of the line could not become a row (an OTLP span without a valid id, say:
    its first problem and how many there were); the line is then also a dead letter, beside the
    rows it did give, so nothing of it is lost and a replay after a fix stores the rest.
    ``app_logs`` counts the line's log records the source's policy only counts
    (``app_logs = "skip"`` or below ``app_logs_min_level``).
    """

    rows: tuple[Row, ...]
    dead: DeadLetter | None = None
    app_logs: int = 0


ParseResult = Row | DeadLetter | AppLog | Rows


class Item(NamedTuple):
    """A parsed line on its way to the sink: where it came from and what it became."""

    line: Line
    result: ParseResult
