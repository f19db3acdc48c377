"""Reading one line again for a replay (issue 22): only from the same file generation, found under
its path or, once rotated, beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.model import FileIdentity
from agent.sources.identity import identify
from agent.sources.lookup import LineGone, read_line
from agent.sources.reader import BOM


def identity_of(path: Path) -> FileIdentity:
    st = os.stat(path)
    return identify(st.st_dev, st.st_ino, path.read_bytes()[:1024])


def test_reads_the_line_cleaned_like_the_reader(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_bytes(BOM + b'{"a": 1}\r\n{"b": 2}\n')
    ident = identity_of(f)
    assert read_line(str(f), ident, 0, 13) == b'{"a": 1}'
    assert read_line(str(f), ident, 13, 22) == b'{"b": 2}'


def test_follows_a_rotation_and_refuses_another_generation(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_bytes(b'{"first": "line"}\n{"second": 2}\n')
    ident = identity_of(f)
    f.rename(tmp_path / "app.log.1")
    f.write_bytes(b'{"first": "line"}\n{"other": 3}\n')  # the same head, another inode
    assert read_line(str(f), ident, 18, 32) == b'{"second": 2}'
    (tmp_path / "app.log.1").unlink()
    with pytest.raises(LineGone, match="no file at"):
        read_line(str(f), ident, 18, 32)


def test_a_file_rewritten_in_place_is_not_the_same_generation(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_bytes(b'{"one": 1}\n')
    ident = identity_of(f)
    with f.open("r+b") as fh:
        fh.write(b'{"two": 2}\n')  # same inode, other bytes
    with pytest.raises(LineGone):
        read_line(str(f), ident, 0, 11)
    f.write_bytes(b'{"one": 1}\n')  # the same bytes again, but shorter than the line's end
    with pytest.raises(LineGone, match="shorter"):
        read_line(str(f), identity_of(f), 0, 40)
