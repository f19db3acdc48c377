"""The agent's own log output: never raises, never blocks, counts what it drops; its format
follows the terminal (issue 22)."""

from __future__ import annotations

import os
import threading

import orjson
import pytest
import structlog

from agent.ops import log as agent_log
from agent.ops.log import LogOutput, configure_logging, dropped, flush_logs, get_logger, wants_console


def test_a_closed_pipe_drops_and_counts_instead_of_raising() -> None:
    r, w = os.pipe()
    os.close(r)
    out = LogOutput(w)
    try:
        for i in range(5):
            out.write(b'{"n": %d}\n' % i)  # EPIPE on every write: nothing raises here
        assert out.flush(10)
        assert out.dropped() == {"write_failed": 5, "queue_full": 0}
    finally:
        out.close(1)
        os.close(w)


def test_a_reader_that_stops_reading_costs_lines_not_time() -> None:
    """A pipe nobody reads fills up; the writer thread blocks, the caller never does."""
    r, w = os.pipe()
    out = LogOutput(w, capacity=10)
    line = b"x" * 20_000 + b"\n"
    try:
        for _ in range(200):  # the queue alone holds more than the pipe's 64 kB
            out.write(line)
        counts = out.dropped()
        assert counts["queue_full"] > 0 and counts["write_failed"] == 0
        assert not out.flush(0.1)  # still stuck: flush gives up instead of hanging
    finally:
        os.close(r)  # the writer's blocked write now fails, and the thread ends
        out.close(5)
        os.close(w)


def test_lines_arrive_whole_and_in_order_from_many_threads() -> None:
    r, w = os.pipe()
    out = LogOutput(w)
    got = bytearray()
    def read_all() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=read_all)
    reader.start()
    threads = [threading.Thread(target=lambda t=t: [out.write(b"%d %d\n" % (t, i)) for i in range(300)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out.flush(10)
    out.close(1)
    os.close(w)
    reader.join()
    os.close(r)
    lines = bytes(got).splitlines()
    assert len(lines) == 1200
    for t in range(4):
        assert [int(x.split()[1]) for x in lines if x.split()[0] == b"%d" % t] == list(range(300))


def test_auto_is_readable_on_a_terminal_and_json_in_a_pipe() -> None:
    master, slave = os.openpty()
    r, w = os.pipe()
    try:
        assert wants_console("auto", slave) and not wants_console("auto", w)
        assert wants_console("console", w) and not wants_console("json", slave)
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)


@pytest.fixture
def restore_logging() -> object:
    yield None
    structlog.reset_defaults()
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    agent_log._OUTPUT = None


def _lines(r: int) -> list[bytes]:
    flush_logs(5)
    os.set_blocking(r, False)
    data = b""
    try:
        while chunk := os.read(r, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data.splitlines()


def test_json_lines_with_levels_and_stdlib_records_alike(restore_logging: object) -> None:
    import logging

    r, w = os.pipe()
    try:
        configure_logging("info", "json", fd=w)
        log = get_logger(agent_id="a1")
        log.debug("batch.committed", rows=1)  # below the level
        log.info("agent.ready", checkpoints=2)
        logging.getLogger("watchfiles.main").info("1 change detected")  # quieted: below warning
        logging.getLogger("some.library").warning("careful")
        lines = [orjson.loads(x) for x in _lines(r)]
    finally:
        os.close(r)
        os.close(w)
    assert [x["event"] for x in lines] == ["agent.ready", "careful"]
    assert lines[0]["agent_id"] == "a1" and lines[0]["level"] == "info" and lines[0]["checkpoints"] == 2
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "some.library"


def test_console_lines_are_readable(restore_logging: object) -> None:
    r, w = os.pipe()
    try:
        configure_logging("info", "console", fd=w)
        get_logger(agent_id="a1").warning("source.no_match", glob="/var/log/x/*.log")
        [line] = _lines(r)
    finally:
        os.close(r)
        os.close(w)
    text = line.decode()
    assert not text.startswith("{") and "source.no_match" in text and "glob=/var/log/x/*.log" in text
    assert "\x1b[" not in text  # colours only on a terminal


def test_dropped_counts_the_current_output(restore_logging: object) -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        configure_logging("info", "json", fd=w)
        get_logger().info("agent.ready")
        flush_logs(5)
        assert dropped()["write_failed"] == 1
    finally:
        os.close(w)


def test_a_readable_traceback_shows_no_local_variables(restore_logging: object) -> None:
    """A library's exception with its traceback, rendered for a terminal: frames, not their locals
    (a connect() frame holds the database password)."""
    import logging

    r, w = os.pipe()
    try:
        configure_logging("info", "console", fd=w)

        def connect(password: str) -> None:
            raise ConnectionError("refused")

        secret = "-".join(("canary", "secret", "77"))  # not in the source text the traceback quotes
        try:
            connect(secret)
        except ConnectionError:
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
        text = b"\n".join(_lines(r)).decode()
    finally:
        os.close(r)
        os.close(w)
    assert "Traceback" in text and "ConnectionError: refused" in text
    assert "canary-secret-77" not in text
