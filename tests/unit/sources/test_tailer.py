"""The tailer on real files: restarts, small and huge lines, many files, permissions."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import traceback
import tracemalloc
from collections import Counter
from pathlib import Path

from agent.sources import Tailer, TailOptions

from .support import Clock, Sink, Writer, lines_of, spec, tailer


def test_forty_byte_file(tmp_path: Path) -> None:
    log = tmp_path / "tiny.log"
    log.write_bytes(b'{"event": "a", "n": 12}\n{"event": "bc"}\n')
    assert log.stat().st_size == 40
    sink = Sink()
    t = tailer([log])
    sink.drain(t)
    assert sink.data() == Counter([b'{"event": "a", "n": 12}', b'{"event": "bc"}'])
    assert sink.lines[0].file.identity.fingerprint_len == 40


def test_empty_file_waits_for_its_first_byte(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    sink = Sink()
    t = tailer([log])
    assert sink.poll(t) == [] and t.files() == []
    w = Writer(log)
    lines = w.lines(2)
    sink.drain(t)
    assert sink.data() == Counter(lines)


def test_partial_line_completed_after_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    sink = Sink()
    first = w.lines(4)
    w.raw(b'{"half": ')
    sink.drain(tailer([log]))
    w.raw(b'"done"}\n')
    after = w.lines(2)
    sink.drain(tailer([log], sink=sink))  # a new tailer from the committed checkpoints
    assert sink.data() == Counter([*first, b'{"half": "done"}', *after])


def test_multibyte_utf8_with_a_restart_between_them(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    texts = ["héllo wörld", "日本語のログ", "emoji 🚀✨", "ελληνικά"]
    data = "\n".join(texts).encode() + b"\n"
    cut = data.index("本".encode()) + 1  # in the middle of a 3-byte character
    log.write_bytes(data[:cut])
    sink = Sink()
    sink.drain(tailer([log]))
    with log.open("ab") as fh:
        fh.write(data[cut:])
    sink.drain(tailer([log], sink=sink))
    assert [x.data.decode() for x in sink.lines] == texts
    starts = [0] + [len("\n".join(texts[: i + 1]).encode()) + 1 for i in range(3)]
    assert [x.start for x in sink.lines] == starts


def test_bom_and_crlf_on_a_real_file(tmp_path: Path) -> None:
    log = tmp_path / "win.log"
    log.write_bytes(b"\xef\xbb\xbf{\"a\": 1}\r\n{\"b\": 2}\r\n\r\n")
    sink = Sink()
    sink.drain(tailer([log]))
    assert [(x.start, x.end, x.data) for x in sink.lines] == [(0, 13, b'{"a": 1}'), (13, 23, b'{"b": 2}'),
                                                              (23, 25, b"")]


def test_restart_after_copytruncate_before_it_was_noticed(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    sink = Sink()
    first = w.lines(5)
    sink.drain(tailer([tmp_path / "app.log*"]))
    unread = w.lines(3)
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    after = w.lines(2)
    events: list[tuple[str, dict[str, object]]] = []
    sink.drain(tailer([tmp_path / "app.log*"], sink=sink, events=events))
    assert sink.data() == Counter(first + unread + after)
    assert "rotation.copy_adopted" in [n for n, _ in events]


def test_restart_after_copytruncate_with_the_copy_outside_the_globs(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    first = w.lines(5)
    sink.drain(tailer([log], clock=clock))
    unread = w.lines(3)
    shutil.copyfile(log, tmp_path / "app.log.1")  # not matched by the glob
    os.truncate(log, 0)
    after = w.lines(2)
    events: list[tuple[str, dict[str, object]]] = []
    t = tailer([log], sink=sink, clock=clock, events=events)
    sink.poll(t)
    clock.advance(10)
    sink.drain(t)
    assert sink.data() == Counter(first + unread + after)
    assert [f["unread_bytes"] for n, f in events if n == "rotation.out_of_globs"] == [
        sum(len(x) + 1 for x in unread)]


def test_restart_drains_a_file_rotated_out_of_the_globs_while_down(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    clock, sink = Clock(), Sink()
    first = w.lines(5)
    sink.drain(tailer([log], clock=clock))
    unread = w.lines(3)
    os.rename(log, tmp_path / "app.log.1")
    new = Writer(log).lines(2)
    t = tailer([log], sink=sink, clock=clock)
    sink.poll(t)
    clock.advance(10)
    sink.drain(t)
    assert sink.data() == Counter(first + unread + new)


def test_start_at_end_skips_existing_lines_but_not_new_files(tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    w = Writer(old)
    w.lines(5)
    w.raw(b"being written")
    sink = Sink()
    t = tailer([tmp_path / "*.log"], start_at="end")
    assert sink.poll(t) == []
    w.raw(b" now\n")
    later = w.lines(1)
    fresh = Writer(tmp_path / "new.log").lines(3)
    sink.drain(t)
    assert sink.data() == Counter([b"being written now", *later, *fresh])


def test_compressed_rotations_are_ignored(tmp_path: Path) -> None:
    for name in ["a.log", "a.log.1.gz", "a.log.2.zst", "a.log.3.bz2", "a.log.4.xz"]:
        (tmp_path / name).write_bytes(b"x\n")
    sink = Sink()
    sink.drain(tailer([tmp_path / "a.log*"]))
    assert {x.file.path for x in sink.lines} == {str(tmp_path / "a.log")}


def test_thousand_files_with_an_open_file_cap_of_64(tmp_path: Path) -> None:
    expected: Counter[bytes] = Counter()
    for i in range(1000):
        (tmp_path / f"d{i % 10}").mkdir(exist_ok=True)
        w = Writer(tmp_path / f"d{i % 10}" / f"f{i}.log")
        expected.update(w.lines(3))
        w.close()
    fds_before = len(os.listdir("/proc/self/fd"))
    sink = Sink()
    t = tailer([tmp_path / "**" / "*.log"], max_open_files=64)
    peak = 0
    for _ in range(200):
        got = sink.poll(t)
        peak = max(peak, len(os.listdir("/proc/self/fd")) - fds_before, t._files.open_count)
        if not got and t.idle():
            break
    assert sink.data() == expected
    assert peak <= 64
    more = Writer(tmp_path / "d3" / "f3.log").lines(2)  # a closed file grows: reopened by identity
    sink.drain(t)
    assert sink.data() == expected + Counter(more)


def test_permission_denied_then_fixed(tmp_path: Path) -> None:
    """We run as root, so chmod 000 would not stop us: the opener is injected and refuses the
    file with the same ``PermissionError`` ``os.open`` raises (see the test below for the real
    chmod path, which runs when not root)."""
    log = tmp_path / "secret.log"
    lines = Writer(log).lines(3)
    denied = {str(log)}
    events: list[tuple[str, dict[str, object]]] = []

    def opener(path: str) -> int:
        if path in denied:
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, os.O_RDONLY)

    t = Tailer([spec(log)], [], TailOptions(use_events=False), lambda n, f: events.append((n, f)), opener=opener)
    sink = Sink()
    for _ in range(3):
        assert sink.poll(t) == []
    assert [n for n, _ in events] == ["file.permission_denied"]  # reported once, retried each scan
    denied.clear()
    sink.drain(t)
    assert sink.data() == Counter(lines)
    assert [n for n, _ in events] == ["file.permission_denied", "file.permission_restored"]


def _check_file_mode_denial(folder: Path) -> None:
    log = folder / "secret.log"
    lines = Writer(log).lines(2)
    log.chmod(0)
    sink = Sink()
    t = tailer([log])
    assert sink.poll(t) == []
    log.chmod(0o644)
    sink.drain(t)
    assert sink.data() == Counter(lines)


def test_permission_denied_by_file_mode(tmp_path: Path) -> None:
    """The real chmod path. Root ignores file modes, so as root the check runs in a forked child
    that has dropped to the unprivileged 'nobody' user first."""
    if os.geteuid() != 0:
        _check_file_mode_denial(tmp_path)
        return
    import pwd

    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="hypertail-perm-"))
    folder.chmod(0o777)
    try:
        pid = os.fork()
        if pid == 0:  # child: drop privileges, run, report through the exit code
            code = 1
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                _check_file_mode_denial(folder)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged check failed (see stderr)"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_64_mib_line_among_normal_lines_with_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    w = Writer(log)
    before = w.lines(10)
    chunk = b"z" * (1 << 20)
    for _ in range(64):
        w.raw(chunk)
    w.raw(b"\n")
    after = w.lines(10)
    sink = Sink()
    t = tailer([log], max_line_bytes=1 << 20, oversize_prefix_bytes=4096)
    del chunk
    gc.collect()
    tracemalloc.start()
    try:
        sink.drain(t)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    big = [x for x in sink.lines if x.oversize]
    assert len(big) == 1 and big[0].data == b"z" * 4096
    assert big[0].end - big[0].start == (64 << 20) + 1
    assert Counter(x.data for x in sink.lines if not x.oversize) == Counter(before + after)
    assert peak < 8 << 20, f"peak traced memory {peak} bytes"


def test_endless_line_without_newline(tmp_path: Path) -> None:
    log = tmp_path / "endless.log"
    w = Writer(log)
    first = w.lines(2)
    clock, sink = Clock(), Sink()
    t = tailer([log], clock=clock, max_line_bytes=1 << 16, oversize_prefix_bytes=100)
    for _ in range(32):
        w.raw(b"e" * (1 << 18))
        assert [x.data for x in sink.poll(t)] in ([], first)
        pending = t._files.active[next(iter(t._files.active))].split.pending
        assert len(pending) <= 100
    assert sink.data() == Counter(first)
    assert not [f for f in t.files() if f.read_offset < f.size]  # read to the end, held back
    os.rename(log, tmp_path / "endless.log.old")
    sink.poll(t)
    clock.advance(10)
    tail = sink.poll(t)
    assert [(x.oversize, len(x.data), x.end - x.start) for x in tail] == [(True, 100, 32 << 18)]


def test_status_and_idle(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    w = Writer(log)
    w.lines(3)
    t = tailer([log], read_chunk=16, max_read_per_poll=40)
    assert not t.idle()
    lines = lines_of(t.poll_once())
    assert not t.idle()
    while not t.idle():
        lines += lines_of(t.poll_once())
    (status,) = t.files()
    assert status.read_offset == status.size == log.stat().st_size and status.acked_offset == 0
    t.ack(lines[-1].file, lines[-1].end)
    assert t.files()[0].acked_offset == status.size


def test_an_unreadable_file_does_not_keep_the_tailer_busy(tmp_path: Path) -> None:
    ok, secret = tmp_path / "ok.log", tmp_path / "secret.log"
    lines = Writer(ok).lines(2)
    Writer(secret).lines(2)

    def opener(path: str) -> int:
        if path == str(secret):
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, os.O_RDONLY)

    t = Tailer([spec(tmp_path / "*.log")], [], TailOptions(use_events=False), opener=opener)
    sink = Sink()
    sink.drain(t)  # raises if idle() never turns true
    assert sink.data() == Counter(lines)
