"""Bytes to Blocks of lines: raw byte offsets, partial lines held back, oversize lines bounded.

:class:`LineSplitter` is fed the bytes of one file in order and returns the complete lines they
finish, as :class:`~agent.model.Block` s. It is pure (no I/O) and is the hot path, so a complete
run of lines is split with ``bytes.split``, its offsets computed with C-level ``itertools``, and
handed over as ONE block: no Python work and no object per line.

Rules:

* A line ends just after its ``\\n``; committing that offset consumes the line.
* A line's data has the ``\\n``, one trailing ``\\r`` and (for the line at offset 0) a UTF-8 BOM
  removed.
* A line longer than ``max_line`` bytes (counted without its ``\\n``) becomes ONE ``oversize``
  block whose data is its first ``prefix`` bytes; its bounds still span the whole line. While
  such a line is being skipped only the prefix is kept: an endless line without a newline costs
  no more memory than that.
* A partial trailing line is held until its newline arrives, or until the caller *releases* it
  (its file was rotated away and stayed quiet): then it is emitted ending at the last byte read.
* A block holds at most ``block_lines`` lines, and carries the ``tail`` of its end: the digest
  (:func:`~agent.sources.identity.tail_hash`) of the up to 64 raw bytes just before it, as they
  were fed. A checkpoint at the end of a block stores that digest, so the sink never reads a
  file to make a checkpoint; capping the lines lets every batch end at a block end.
* A run of NUL bytes is not part of any line (JSON never holds a raw NUL, so no valid line is
  cut): it is ONE ``oversize`` block with data :data:`~agent.model.NUL_RUN` spanning the run,
  which becomes a dead letter saying where and how long. Such runs are the hole a writer
  without ``O_APPEND`` leaves after a copytruncate. Bytes of a line before a NUL run end that
  line there (a fragment); the bytes after the run start a new line. Chunks without a NUL take
  the fast path untouched (one ``memchr``).
"""

from __future__ import annotations

import re
from itertools import accumulate, repeat
from operator import add

from agent.model import NUL_RUN, Block, FileRef
from agent.sources.identity import TAIL_BYTES, tail_hash

BOM = b"\xef\xbb\xbf"
# Lines per block at most: the runner parses one block between two steps aside, and a batch
# ends at a block end (where the block's tail hash is known), so a block is also the grain by
# which ``batch.max_rows`` is kept (the runner asks for fewer when max_rows is smaller).
MAX_BLOCK_LINES = 64
_NOT_NUL = re.compile(rb"[^\x00]")


class LineSplitter:
    """Turns one file's byte stream into Blocks of lines, holding back the unterminated tail."""

    __slots__ = ("_base", "_data", "block_lines", "in_nul", "max_line", "pending", "pos", "prefix", "ref",
                 "skipping", "start", "window")

    def __init__(self, ref: FileRef, pos: int, max_line: int, prefix: int, window: bytes = b"",
                 block_lines: int = MAX_BLOCK_LINES) -> None:
        self.ref = ref
        self.pos = pos  # next byte to feed
        self.start = pos  # offset of the first byte of the pending line
        self.pending = bytearray()
        self.skipping = False  # inside an oversize line: pending holds only its prefix
        self.in_nul = False  # start..pos is a run of NUL bytes (nothing in pending)
        self.max_line = max_line
        self.prefix = min(prefix, max_line)
        self.window = window[-TAIL_BYTES:]  # the raw bytes just before pos, as they were read
        self.block_lines = max(1, block_lines)
        self._data = b""  # the chunk being fed, from offset _base (for the blocks' tails)
        self._base = pos

    @property
    def has_partial(self) -> bool:
        return self.start < self.pos

    def moved_to(self, ref: FileRef) -> LineSplitter:
        """The same reading state continued in another file (a copytruncate copy)."""
        other = LineSplitter(ref, self.pos, self.max_line, self.prefix, self.window, self.block_lines)
        other.start, other.pending, other.skipping = self.start, bytearray(self.pending), self.skipping
        other.in_nul = self.in_nul
        return other

    def feed(self, data: bytes) -> list[Block]:
        """Consume the next bytes of the file; return the lines they complete."""
        self._data, self._base = data, self.pos
        try:
            if self.in_nul or b"\0" in data:
                return self._feed_nuls(data)
            return self._feed(data)
        finally:
            self.window = (self.window + data[-TAIL_BYTES:])[-TAIL_BYTES:]
            self._data, self._base = b"", self.pos

    def _tail(self, end: int) -> str:
        """The tail hash of ``end``: the raw bytes before it come from the chunk being fed and,
        for an end near the chunk's start, from the window before it."""
        rel = end - self._base
        if rel >= TAIL_BYTES:
            return tail_hash(self._data[rel - TAIL_BYTES : rel])
        return tail_hash(self.window + self._data[:rel])

    def _block(self, bounds: list[int], data: list[bytes], oversize: bool = False) -> Block:
        return Block(self.ref, bounds, data, oversize, self._tail(bounds[-1]))

    def _feed_nuls(self, data: bytes) -> list[Block]:
        """Slow path: cut NUL runs out of the byte stream (see the module docstring)."""
        out: list[Block] = []
        i, n = 0, len(data)
        while i < n:
            if self.in_nul:
                m = _NOT_NUL.search(data, i)
                j = n if m is None else m.start()
                self.pos += j - i
                i = j
                if m is not None:
                    out.append(self._end_nul())
                continue
            j = data.find(b"\0", i)
            if j < 0:
                out += self._feed(data[i:])
                break
            out += self._feed(data[i:j])
            if self.has_partial:
                out.append(self._finish(self.pos))  # a line fragment cut short by the run
            self.in_nul, i = True, j
        return out

    def _end_nul(self) -> Block:
        line = self._block([self.start, self.pos], [NUL_RUN], True)
        self.start, self.in_nul = self.pos, False
        return line

    def _feed(self, data: bytes) -> list[Block]:
        """The fast path: one ``split`` of the whole chunk (no copy of its complete lines)."""
        out: list[Block] = []
        base = self.pos
        self.pos += len(data)
        parts = data.split(b"\n")
        held = parts.pop()  # the bytes after the last newline: the next partial line
        if not parts:  # no newline: all of it belongs to the held-back line
            self._hold(held)
            return out
        start = base
        if self.start < base:  # the first part ends the held-back line
            first = parts[0]
            self._hold(first)
            start += len(first) + 1
            out.append(self._finish(start))
            del parts[0]
        if parts:
            self._run(out, parts, start, self.pos - len(held) - 1 - start, b"\r" in data)
        self.start = self.pos - len(held)
        if held:
            self._hold(held)
        return out

    def release(self) -> Block | None:
        """Emit the held-back partial line as it is (its writer is gone); ``None`` if none."""
        if not self.has_partial:
            return None
        return self._end_nul() if self.in_nul else self._finish(self.pos)

    def _run(self, out: list[Block], parts: list[bytes], start: int, size: int, cr: bool) -> None:
        """Append ``parts``, complete lines starting at ``start`` and ``size`` bytes long in all
        (without the last newline), as one block; ``cr``: some part may end in ``\\r``."""
        if size > self.max_line and max(map(len, parts)) > self.max_line:
            self._run_checked(out, parts, start)
            return
        bounds = list(accumulate(map(add, map(len, parts), repeat(1)), initial=start))
        if cr:
            parts = [p[:-1] if p[-1:] == b"\r" else p for p in parts]
        if start == 0 and parts[0][:3] == BOM:
            parts[0] = parts[0][3:]
        n = self.block_lines
        if len(parts) <= n:
            out.append(self._block(bounds, parts))
            return
        for i in range(0, len(parts), n):
            out.append(self._block(bounds[i : i + n + 1], parts[i : i + n]))

    def _run_checked(self, out: list[Block], parts: list[bytes], start: int) -> None:
        """Slow path for chunks larger than ``max_line``: some part may be oversize. The lines
        between oversize ones are still handed over as one block."""
        bounds, kept = [start], list[bytes]()
        for part in parts:
            end = start + len(part) + 1
            if len(part) > self.max_line:
                if kept:
                    out.append(self._block(bounds, kept))
                out.append(self._block([start, end], [_clean(part[: self.prefix], start)], True))
                bounds, kept = [end], []
            else:
                if len(kept) == self.block_lines:
                    out.append(self._block(bounds, kept))
                    bounds, kept = [start], []
                kept.append(_strip_cr(_clean(part, start)))
                bounds.append(end)
            start = end
        if kept:
            out.append(self._block(bounds, kept))

    def _hold(self, data: bytes) -> None:
        if self.skipping:
            return
        self.pending += data
        if len(self.pending) > self.max_line:
            self.skipping = True
            del self.pending[self.prefix :]

    def _finish(self, end: int) -> Block:
        data = _clean(bytes(self.pending), self.start)
        if self.skipping:
            line = self._block([self.start, end], [data], True)
        else:
            line = self._block([self.start, end], [_strip_cr(data)])
        self.pending.clear()
        self.skipping = False
        self.start = end
        return line


def _clean(data: bytes, start: int) -> bytes:
    return data[3:] if start == 0 and data[:3] == BOM else data


def _strip_cr(data: bytes) -> bytes:
    return data[:-1] if data[-1:] == b"\r" else data
