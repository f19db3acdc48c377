"""agent.emit: setup, trace context, and never raising into the application."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from agent import emit
from agent.emit import context as emit_context
from agent.emit.output import dumps
from agent.emit.writer import LineWriter
from agent.model import AppLog, DeadLetter, Row
from agent.parse import parse

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def rows(path: Path) -> list[Row]:
    out = []
    for line in path.read_bytes().splitlines():
        result = parse(line)
        assert isinstance(result, Row), (result, line)
        out.append(result)
    return out


# --- ids and traceparent -----------------------------------------------------------------------

def test_new_ids_are_w3c() -> None:
    for _ in range(100):
        t, s = emit.new_trace_id(), emit.new_span_id()
        assert len(t) == 32 and len(s) == 16 and int(t, 16) and int(s, 16) and t == t.lower()


def test_traceparent_round_trip() -> None:
    header = f"00-{TID}-{SID}-01"
    ctx = emit.parse_traceparent(header)
    assert ctx == emit.TraceContext(TID, SID, 1) and ctx.sampled
    assert emit.format_traceparent(ctx) == header == ctx.traceparent()
    assert emit.parse_traceparent(f"00-{TID}-{SID}-00").sampled is False  # type: ignore[union-attr]
    child = ctx.child()
    assert child.trace_id == TID and child.span_id != SID and child.flags == 1
    root = emit.format_traceparent(emit.TraceContext(TID))
    assert emit.parse_traceparent(root) is not None and root.startswith(f"00-{TID}-")


@pytest.mark.parametrize("header", [
    f"00-{TID.upper()}-{SID}-01", f"ff-{TID}-{SID}-01", f"00-{'0' * 32}-{SID}-01", f"00-{TID}-{'0' * 16}-01",
    f"00-{TID}-{SID}-01-extra", f"00-{TID}-{SID}", f"0-{TID}-{SID}-01", "", None, 42, f"00-{TID}-{SID}-1",
])
def test_invalid_traceparent_is_none(header: Any) -> None:
    assert emit.parse_traceparent(header) is None


def test_future_traceparent_versions_may_carry_more_fields() -> None:
    assert emit.parse_traceparent(f"01-{TID}-{SID}-01-whatever") == emit.TraceContext(TID, SID, 1)


# --- context propagation -----------------------------------------------------------------------

def test_spans_nest_and_context_is_restored(log_path: Path) -> None:
    assert emit.current() is None
    with emit.span("outer", "custom") as outer:
        with emit.span("inner", "custom") as inner:
            assert emit.current() == inner.ctx
        assert emit.current() == outer.ctx
    assert emit.current() is None
    inner_r, outer_r = records(log_path)
    assert inner_r["parent_span_id"] == outer_r["span_id"] and "parent_span_id" not in outer_r
    assert inner_r["trace_id"] == outer_r["trace_id"]


def test_use_continues_a_remote_trace(log_path: Path) -> None:
    with emit.use(f"00-{TID}-{SID}-01") as ctx:
        assert ctx is not None and emit.current() == ctx
        with emit.trace("handler"):
            with emit.span("work", "custom"):
                pass
    start, span_r, end = records(log_path)
    assert start["trace_id"] == span_r["trace_id"] == end["trace_id"] == TID
    assert span_r["parent_span_id"] == SID and start["metadata"] == {"parent_span_id": SID}
    assert emit.current() is None
    with emit.use("garbage") as none:
        assert none is None and emit.current() is None


async def test_context_follows_asyncio_tasks_and_threads(log_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def child(name: str) -> None:
        seen[name] = emit.current()

    async with emit.span("root", "custom") as root:
        await asyncio.gather(child("task"), asyncio.create_task(child("created")))
        seen["to_thread"] = await asyncio.to_thread(emit.current)
        def in_thread() -> None:
            seen["thread"] = emit.current()

        thread = threading.Thread(target=emit.wrap(in_thread))
        thread.start()
        thread.join()
        bare = threading.Thread(target=lambda: seen.__setitem__("bare", emit.current()))
        bare.start()
        bare.join()
    assert seen["task"] == seen["created"] == seen["to_thread"] == seen["thread"] == root.ctx
    assert seen["bare"] is None  # plain threads start with an empty context: use emit.wrap


def test_nested_trace_starts_a_new_trace_linked_to_its_parent(log_path: Path) -> None:
    with emit.trace("outer") as outer, emit.span("step", "custom") as step, emit.trace("inner") as inner:
        assert inner.trace_id != outer.trace_id
    inner_start = records(log_path)[1]
    assert inner_start["metadata"] == {"parent_trace_id": outer.trace_id, "parent_span_id": step.span_id}


def test_opentelemetry_ids_are_used_when_a_span_is_active(log_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = types.SimpleNamespace(is_valid=True, trace_id=int(TID, 16), span_id=int(SID, 16), trace_flags=1)
    fake = types.SimpleNamespace(get_current_span=lambda: types.SimpleNamespace(get_span_context=lambda: ctx))
    monkeypatch.setattr(emit_context, "_otel_trace", fake)
    assert emit.current() == emit.TraceContext(TID, SID, 1)
    with emit.span("under otel", "custom"):
        pass
    (r,) = records(log_path)
    assert r["trace_id"] == TID and r["parent_span_id"] == SID
    ctx.is_valid = False
    assert emit.current() is None
    monkeypatch.setattr(emit_context, "_otel_trace", types.SimpleNamespace())  # broken module: ignored
    assert emit.current() is None


def test_app_logs_carry_the_active_ids(log_path: Path) -> None:
    log = structlog.get_logger()
    with emit.span("s", "custom") as s:
        log.info("inside", user="u")
    log.info("outside")
    inside, _, outside = records(log_path)
    assert inside["trace_id"] == s.ctx.trace_id and inside["span_id"] == s.span_id  # type: ignore[union-attr]
    assert "trace_id" not in outside and outside["event"] == "outside"
    assert [type(parse(line)) for line in log_path.read_bytes().splitlines()] == [AppLog, Row, AppLog]


# --- setup variants ----------------------------------------------------------------------------

def test_records_ignore_the_level_filter(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    emit.configure(path, level="warning")
    try:
        structlog.get_logger().info("filtered")
        structlog.get_logger().warning("kept")
        with emit.span("s", "custom"):
            pass
    finally:
        emit.shutdown()
    assert [r.get("event") for r in records(path)] == ["kept", "span"]


def test_processors_work_in_an_app_owned_structlog_setup(tmp_path: Path) -> None:
    path = tmp_path / "own.log"
    with path.open("wb") as f:
        structlog.configure(processors=emit.processors(), logger_factory=structlog.BytesLoggerFactory(f))
        try:
            with emit.trace("t"), emit.span("s", "retrieval", result_count=2):
                structlog.get_logger().info("app line")
        finally:
            structlog.reset_defaults()
    kinds = [type(parse(line)).__name__ for line in path.read_bytes().splitlines()]
    assert kinds == ["Row", "AppLog", "Row", "Row"]


def test_custom_record_type_key(tmp_path: Path) -> None:
    path = tmp_path / "k.log"
    emit.configure(path, record_type_key="kind")
    try:
        with emit.span("s", "custom"):
            pass
    finally:
        emit.shutdown()
    line = path.read_bytes().strip()
    assert orjson.loads(line)["kind"] == "span" and isinstance(parse(line, record_type_key="kind"), Row)


def test_rotation_by_size_keeps_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    emit.configure(path, max_bytes=2000, backup_count=3)
    try:
        for i in range(40):
            emit.document_event("parse", chunk_count=i)
    finally:
        emit.shutdown()
    files = sorted(f for f in tmp_path.iterdir() if f.name != ".r.log.lock")  # the rotation lock
    assert [f.name for f in files] == ["r.log", "r.log.1", "r.log.2", "r.log.3"]
    assert all(0 < f.stat().st_size <= 2000 for f in files)
    counts = sorted(r["chunk_count"] for f in files for r in records(f))
    assert counts == list(range(40 - len(counts), 40))  # the oldest were rotated away, none cut


def test_stdout_mode(capfd: pytest.CaptureFixture[str]) -> None:
    emit.configure()
    try:
        emit.chat_message("user", "hello")
    finally:
        emit.shutdown()
    out = capfd.readouterr().out.strip()
    assert isinstance(parse(out.encode()), Row)


# --- never raising -----------------------------------------------------------------------------

def test_exceptions_of_the_app_pass_through_and_are_recorded(log_path: Path) -> None:
    with pytest.raises(KeyError), emit.trace("t"), emit.span("s", "custom"):
        raise KeyError("missing")
    span_r, end = records(log_path)[1:]
    assert span_r["status"] == end["status"] == "failed"
    assert span_r["error_type"] == "KeyError" and span_r["error_message"] == "'missing'"


class _Evil:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


@pytest.mark.filterwarnings("ignore::agent.emit.records.InvalidFieldWarning")  # on purpose here
def test_bad_argument_types_raise_nothing(log_path: Path) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    before = emit.stats()
    with emit.trace(123, operation_type=["x"], user_id=object(), kb_id=_Evil(), extra=cyclic) as t:  # type: ignore[arg-type]
        t.set(total_cost_usd="lots", weird=_Evil())
        with emit.span(None, object(), input_tokens="many", cost_usd=float("nan"), model=b"bytes",  # type: ignore[arg-type]
                       temperature=float("inf"), big=2**80, surrogate="\ud800", evil=_Evil()) as s:
            s.set(result_count=-5, document_id=42)
        emit.llm_call(_Evil(), input_tokens=2**70, duration_ms="slow", cost_usd=object())  # type: ignore[arg-type]
        emit.chat_message(b"role", {1, 2}, sources=iter([1]), citations=_Evil(), turn_number=1.5)  # type: ignore[arg-type]
        emit.document_event(None, "weird", file_size_bytes=2**70, id="not-a-uuid", meta=_Evil())  # type: ignore[arg-type]
    after = emit.stats()
    assert after["written"] + after["dropped"] == before["written"] + before["dropped"] + 6
    assert after["coerced"] > before["coerced"]
    for line in log_path.read_bytes().splitlines():
        assert type(parse(line)) in (Row, DeadLetter)


def test_serializer_never_fails() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(1000):
        node.append([])
        node = node[0]
    for value in ({"a": 2**90}, {"s": "\udcff"}, {"d": deep}, {1: _Evil()}, {"x": {1, 2}}, {"b": b"\xff"}):
        orjson.loads(dumps(value))


@contextlib.contextmanager
def tiny_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 64 KiB tmpfs (we may be root); ``None`` where mounting is not possible."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                        capture_output=True, check=False).returncode == 0
    try:
        yield mnt if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_full_disk_counts_drops_and_leaves_no_partial_line(tmp_path: Path) -> None:
    with tiny_disk(tmp_path) as mnt:
        target = (mnt / "full.log") if mnt is not None else None
        if target is not None:
            emit.configure(target, max_bytes=10**9)
        else:  # no tmpfs: /dev/full fails every write with ENOSPC
            emit.configure(fd=os.open("/dev/full", os.O_WRONLY))
        try:
            before = emit.dropped()
            for i in range(400):
                with emit.span("filling", "custom", input_preview="p" * 300, chunk_count=i):
                    pass
            lost = emit.dropped() - before
        finally:
            emit.shutdown()
        assert lost > 0
        if target is not None:
            data = target.read_bytes()
            assert data.endswith(b"\n")
            lines = data.splitlines()
            assert len(lines) + lost == 400
            assert all(isinstance(parse(line), Row) for line in lines)


def test_dev_full_and_closed_descriptors_count_drops(tmp_path: Path) -> None:
    full = os.open("/dev/full", os.O_WRONLY)
    reader, writer = os.pipe()
    os.close(reader)  # EPIPE on write
    closed = os.dup2(os.open(os.devnull, os.O_WRONLY), 900)
    os.close(closed)  # EBADF on write; 900 is far above anything the process opens
    try:
        for fd in (full, writer, closed):
            emit.configure(fd=fd)
            before = emit.dropped()
            with emit.span("s", "custom"):
                emit.chat_message("user", "x")
            assert emit.dropped() - before == 2
    finally:
        emit.shutdown()
        os.close(full)
        os.close(writer)


def test_writer_rolls_back_a_short_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "short.log"
    w = LineWriter(str(path))
    assert w.write(b"first\n")
    calls: Iterator[int | OSError] = iter([3, OSError(28, "No space left on device")])

    def fake_write(fd: int, data: bytes) -> int:
        result = next(calls)
        if isinstance(result, OSError):
            raise result
        return real_write(fd, data[:result])

    real_write = os.write
    monkeypatch.setattr(os, "write", fake_write)
    assert not w.write(b"second\n")
    monkeypatch.undo()
    assert w.write(b"third\n")
    w.close()
    assert path.read_bytes() == b"first\nthird\n"


def test_stdlib_logging_recipe_of_the_docs(tmp_path: Path) -> None:
    """The docs' recipe for apps on stdlib logging: records and app lines both parse."""
    import logging

    path = tmp_path / "stdlib.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=emit.processors(text=True)[:-1],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, emit.json_renderer(text=True)],
    ))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    structlog.configure(
        processors=[*emit.processors()[:-1], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    try:
        with emit.trace("t"), emit.span("s", "tool"):
            logging.getLogger("legacy").warning("plain stdlib line")
            structlog.get_logger("app").info("structlog line")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        structlog.reset_defaults()
    results = [parse(line) for line in path.read_bytes().splitlines()]
    assert [type(r).__name__ for r in results] == ["Row", "AppLog", "AppLog", "Row", "Row"]
    legacy = orjson.loads(path.read_bytes().splitlines()[1])
    assert legacy["event"] == "plain stdlib line" and "trace_id" in legacy and "timestamp" in legacy


# --- the README's first hour (issue 22) ----------------------------------------------------------

def test_configure_creates_a_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "app" / "app.log"
    emit.configure(path)
    try:
        emit.chat_message("user", "hello")
    finally:
        emit.shutdown()
    assert [r["content"] for r in records(path)] == ["hello"]


def test_a_folder_that_disappears_is_created_again_and_nothing_raises(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "logs"
    path = folder / "app.log"
    emit.configure(path)
    try:
        emit.chat_message("user", "before")
        shutil.rmtree(folder)  # a clean-up job removed the log folder under the running app
        before = emit.dropped()
        emit.chat_message("user", "after")
        with emit.span("s", "custom"):
            structlog.get_logger().info("inside")
        assert emit.dropped() == before
        assert [r.get("content", r.get("event")) for r in records(path)] == ["after", "inside", "span"]
        shutil.rmtree(folder)
        folder.parent.joinpath("logs").write_text("a file where the folder was: it cannot come back")
        emit.chat_message("user", "lost")  # cannot be written: counted, not raised
        assert emit.dropped() == before + 1
    finally:
        emit.shutdown()


def test_a_user_id_that_is_not_a_uuid_warns_once_at_the_apps_line(log_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from agent.emit import records as emit_records

    monkeypatch.setattr(emit_records, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with emit.trace("chat_request", operation_type="chat", user_id="alice"):
            emit.chat_message("user", "hi", user_id="bob", kb_id="8d3a7f0e-1c2b-4a5d-9e6f-0a1b2c3d4e5f")
        emit.chat_message("user", "again", user_id="carol")
    assert [(w.category.__name__, Path(w.filename).name) for w in caught] == [
        ("InvalidFieldWarning", "test_emit.py")]
    assert "user_id='alice' is not a UUID" in str(caught[0].message)
    assert "metadata._invalid" in str(caught[0].message)
    monkeypatch.setattr(emit_records, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an app that turns warnings into errors: still nothing raises
        emit.chat_message("user", "strict", user_id="dave")
    assert [r["content"] for r in records(log_path) if r.get("record_type") == "chat_message"][-1] == "strict"
