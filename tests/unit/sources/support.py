"""Helpers for the sources tests: numbered lines, a writer that behaves like an app, a fake
clock, and a fake sink that acknowledges everything and keeps checkpoints the way the real sink
does (one per identity key, with the tail hash its last block carries), and ``until`` for the
asyncio tests."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from agent.model import Block, Checkpoint, Line
from agent.sources import SourceSpec, Tailer, TailOptions

_numbers = itertools.count()


def payload(tag: str = "l") -> bytes:
    """A unique line body (without newline); its first 8 bytes are already unique."""
    return b"%07d-%s {\"event\": \"x\"}" % (next(_numbers), tag.encode())


class Clock:
    """A monotonic clock the test moves by hand (rotation grace, idle close)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Writer:
    """An application writing lines through one O_APPEND descriptor, like a logger does."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written: list[bytes] = []

    def lines(self, n: int = 1, tag: str = "l", eol: bytes = b"\n") -> list[bytes]:
        out = [payload(tag) for _ in range(n)]
        if out:
            os.write(self.fd, b"".join(p + eol for p in out))
        self.written += out
        return out

    def raw(self, data: bytes) -> None:
        os.write(self.fd, data)

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


class Sink:
    """Takes every line, acks it, and keeps checkpoints like ``hypertail.checkpoints``."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.checkpoints: dict[str, Checkpoint] = {}

    def take(self, tailer: Tailer, blocks: Sequence[Block]) -> list[Line]:
        """Commit ``blocks`` as the agent's sink does: each file's checkpoint at the end of its
        last block, with the tail hash that block carries."""
        lines = lines_of(blocks)
        self.lines += lines
        last: dict[str, Block] = {}
        for block in blocks:
            last[block.file.identity.key] = block
        for key, block in last.items():
            f = block.file
            self.checkpoints[key] = Checkpoint(f.identity, f.path, f.source, block.end, block.tail)
            tailer.ack(f, block.end)
        return list(lines)

    def poll(self, tailer: Tailer, rounds: int = 1) -> list[Line]:
        out: list[Line] = []
        for _ in range(rounds):
            out += self.take(tailer, tailer.poll_once())
        return out

    def drain(self, tailer: Tailer, limit: int = 1000) -> list[Line]:
        """Poll until a poll brings nothing and the tailer says it is idle."""
        out: list[Line] = []
        for _ in range(limit):
            got = self.take(tailer, tailer.poll_once())
            out += got
            if not got and tailer.idle():
                return out
        raise AssertionError("tailer never became idle")

    def data(self) -> Counter[bytes]:
        return Counter(line.data for line in self.lines)


def lines_of(blocks: Iterable[Block]) -> list[Line]:
    """The lines of what a tailer handed over, one by one."""
    return [line for block in blocks for line in block.lines()]


def spec(*patterns: Path | str, name: str = "app", **kw: object) -> SourceSpec:
    return SourceSpec(name, tuple(str(p) for p in patterns), **kw)  # type: ignore[arg-type]


def tailer(patterns: Iterable[Path | str], sink: Sink | None = None, clock: Clock | None = None,
           events: list[tuple[str, dict[str, object]]] | None = None, start_at: str = "beginning",
           **opts: object) -> Tailer:
    """A tailer over ``patterns`` resuming from ``sink``'s checkpoints (polling, fake clock)."""
    options = TailOptions(**{"use_events": False, **opts})  # type: ignore[arg-type]
    cps = list(sink.checkpoints.values()) if sink is not None else []
    on_event = (lambda n, f: events.append((n, f))) if events is not None else None
    return Tailer([spec(*patterns, start_at=start_at)], cps, options, on_event, clock=clock or Clock())


def counter(items: Iterable[bytes]) -> Counter[bytes]:
    return Counter(items)


async def until(pred: Callable[[], bool], what: str, within_s: float = 20) -> None:
    """Wait, on the event loop, until ``pred()`` holds (the loop under test runs meanwhile)."""
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.01)
