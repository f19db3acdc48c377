"""The README's application snippet, run as a new user would paste it (issue 22, item 6): into a
log folder that does not exist yet, with an id of the right type, and every line a clean row."""

from __future__ import annotations

import types
import uuid
import warnings
from pathlib import Path

from agent import contract, emit
from agent.model import Row
from agent.parse import parse

ROOT = Path(__file__).resolve().parents[3]


def snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### In your application"):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_snippet_runs_into_a_missing_folder_and_stores_every_field(tmp_path: Path) -> None:
    target = tmp_path / "var" / "log" / "app" / "app.log"
    code = snippet()
    assert '"/var/log/app/app.log"' in code
    user = types.SimpleNamespace(id=uuid.uuid4())
    scope = {"user": user, "hits": [{"document_id": str(uuid.uuid4())}], "answer": "A sidecar.", "conv": "c-1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an InvalidFieldWarning (a user_id that is no UUID) fails here
        try:
            exec(compile(code.replace("/var/log/app/app.log", str(target)), "README.md", "exec"), scope)
        finally:
            emit.shutdown()
    rows = [parse(line) for line in target.read_bytes().splitlines()]
    assert rows and all(isinstance(r, Row) for r in rows), rows
    traces = [dict(zip(contract.COLUMNS[r.table], r.values, strict=True)) for r in rows
              if isinstance(r, Row) and r.table == "traces"]
    assert traces and all(t["user_id"] == str(user.id) for t in traces)  # uuid columns hold canonical text
    assert all(contract.INVALID_MARKER not in str(r.values) for r in rows if isinstance(r, Row))


def test_the_readme_sends_nobody_outside_the_repository() -> None:
    """A user of the package has no ../shared beside it (item 9)."""
    assert "../" not in (ROOT / "README.md").read_text()
