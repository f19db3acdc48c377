"""`hypertail status` at 80 columns and in a pipe (issue 22): whole columns, the path cut at its start."""

from __future__ import annotations

from typing import Any

from agent.cli.status import render_table

FILE: dict[str, Any] = {
    "source": "app", "path": "/var/log/app/a/deep/folder/structure/app-worker-3.log", "file_key": "1:2:ab",
    "agent_id": "a", "committed_offset": 123456, "size": 223456, "bytes_behind": 100000, "state": "behind",
    "last_commit": "2026-05-01T12:00:00+00:00", "dead_letters_1h": 2,
}


def test_files_fit_80_columns_and_keep_the_file_name() -> None:
    lines = render_table({"agents": [], "files": [FILE], "hypertables": []}, 80).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["SOURCE", "STATE", "SIZE", "BEHIND", "DEAD/1h", "LAST", "COMMIT", "PATH"]
    assert lines[1].endswith("…/app-worker-3.log") and " 100000 " in lines[1]
    assert lines[2] == "hidden at 80 columns: COMMITTED (--json shows all)"


def test_files_in_a_pipe_are_whole() -> None:
    lines = render_table({"agents": [], "files": [FILE], "hypertables": []}, None).splitlines()
    assert lines[0].split()[2] == "COMMITTED" and lines[1].endswith(FILE["path"]) and len(lines) == 2
