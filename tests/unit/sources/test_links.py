"""Symbolic links on a volume the application controls (issue 10): never read outside the roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sources import Tailer, TailOptions
from agent.sources.handles import default_open
from agent.sources.links import LinkPolicy, LinkRefused
from tests.unit.sources.support import Sink, spec

Events = list[tuple[str, dict[str, object]]]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    (logs / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOPSECRET\n")
    (outside / "x.log").write_bytes(b"outside-dir-line\n")
    return logs, outside


def run(logs: Path, mode: str = "within_roots", events: Events | None = None) -> tuple[Sink, Tailer]:
    on_event = (lambda n, f: events.append((n, f))) if events is not None else None
    t = Tailer([spec(logs / "**" / "*.log")], [], TailOptions(use_events=False, follow_symlinks=mode),  # type: ignore[arg-type]
               on_event)
    sink = Sink()
    sink.drain(t)
    return sink, t


def test_links_inside_are_read_and_links_outside_refused(layout: tuple[Path, Path]) -> None:
    logs, outside = layout
    (logs / "data" / "real.dat").write_bytes(b"inside-a\n")
    (logs / "in.log").symlink_to(logs / "data" / "real.dat")
    (logs / "dots.log").symlink_to("data/../data/real2.dat")
    (logs / "data" / "real2.dat").write_bytes(b"inside-b\n")
    (logs / "evil.log").symlink_to("/etc/passwd")
    (logs / "esc.log").symlink_to(outside / "secret.txt")
    (logs / "up.log").symlink_to("../outside/secret.txt")
    (logs / "dirlink").symlink_to(outside, target_is_directory=True)
    events: Events = []
    sink, t = run(logs, events=events)
    assert sorted(sink.data()) == [b"inside-a", b"inside-b"]
    refused = {(e["path"], e["target"]) for n, e in events if n == "file.link_refused"}
    assert refused == {
        (str(logs / "evil.log"), "/etc/passwd"), (str(logs / "esc.log"), str(outside / "secret.txt")),
        (str(logs / "up.log"), str(outside / "secret.txt")),
        (str(logs / "dirlink" / "x.log"), str(outside / "x.log")),
    }
    assert sorted(p for _, p, _, _ in t.refused()) == sorted(p for p, _ in refused)
    t.poll_once()
    assert sum(n == "file.link_refused" for n, _ in events) == 4  # once while it stays


def test_link_to_a_folder_inside_the_root_reads_each_inode_once(layout: tuple[Path, Path]) -> None:
    logs, _ = layout
    (logs / "data" / "y.log").write_bytes(b"y1\ny2\n")
    (logs / "alias").symlink_to(logs / "data", target_is_directory=True)
    sink, _ = run(logs)
    assert sorted(sink.data().elements()) == [b"y1", b"y2"]


def test_hard_link_is_the_same_file_read_once(layout: tuple[Path, Path]) -> None:
    logs, _ = layout
    (logs / "h1.log").write_bytes(b"h\n")
    os.link(logs / "h1.log", logs / "h2.log")
    sink, _ = run(logs)
    assert list(sink.data().elements()) == [b"h"]


def test_never_refuses_even_links_inside(layout: tuple[Path, Path]) -> None:
    logs, _ = layout
    (logs / "data" / "real.dat").write_bytes(b"inside\n")
    (logs / "in.log").symlink_to(logs / "data" / "real.dat")
    (logs / "plain.log").write_bytes(b"plain\n")
    events: Events = []
    sink, _ = run(logs, "never", events)
    assert list(sink.data()) == [b"plain"]
    assert [e["path"] for n, e in events if n == "file.link_refused"] == [str(logs / "in.log")]


def test_always_follows_anything(layout: tuple[Path, Path]) -> None:
    logs, outside = layout
    (logs / "esc.log").symlink_to(outside / "secret.txt")
    sink, _ = run(logs, "always")
    assert list(sink.data()) == [b"TOPSECRET"]


def test_a_root_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.log").write_bytes(b"a\n")
    (tmp_path / "logs").symlink_to(real, target_is_directory=True)
    for mode in ("within_roots", "never"):
        sink, _ = run(tmp_path / "logs", mode)
        assert list(sink.data()) == [b"a"]


def test_link_swapped_after_discovery_is_never_read(layout: tuple[Path, Path]) -> None:
    logs, outside = layout
    (logs / "data" / "real.dat").write_bytes(b"first\n")
    link = logs / "app.log"
    link.symlink_to(logs / "data" / "real.dat")
    events: Events = []
    t = Tailer([spec(logs / "*.log")], [], TailOptions(use_events=False, idle_close_s=0.001),
               lambda n, f: events.append((n, f)))
    sink = Sink()
    sink.drain(t)
    tmp = logs / "tmp"
    tmp.symlink_to(outside / "secret.txt")
    os.replace(tmp, link)  # atomic swap of the link, as an attacker would do it
    sink.drain(t)
    assert list(sink.data()) == [b"first"]
    assert [e["target"] for n, e in events if n == "file.link_refused"] == [str(outside / "secret.txt")]


def test_folder_swapped_between_check_and_open_is_caught(layout: tuple[Path, Path]) -> None:
    """The race the descriptor check exists for: the check saw a real folder, the open went
    through a link put there in between."""
    logs, outside = layout
    (logs / "d").mkdir()
    (logs / "d" / "x.log").write_bytes(b"inside\n")
    policy = LinkPolicy("within_roots", [str(logs)])

    def racing_open(path: str) -> int:
        os.rename(logs / "d", logs / "d_old")
        (logs / "d").symlink_to(outside, target_is_directory=True)
        return default_open(path)

    with pytest.raises(LinkRefused) as err:
        policy.open(racing_open, str(logs / "d" / "x.log"))
    assert err.value.target == str(outside / "x.log")


def test_last_component_swapped_to_a_link_is_refused(layout: tuple[Path, Path]) -> None:
    logs, outside = layout
    (logs / "x.log").write_bytes(b"inside\n")
    policy = LinkPolicy("within_roots", [str(logs)])

    def racing_open(path: str) -> int:
        os.unlink(path)
        os.symlink(outside / "secret.txt", path)
        return default_open(path)

    with pytest.raises(LinkRefused):
        policy.open(racing_open, str(logs / "x.log"))
