"""The import rules of docs/architecture.md, checked on every module under agent/ with ``ast``.

Every ``import`` counts, including those inside functions (the CLI imports lazily). A failure
names the file, the line and the import, and the rule it breaks. When a rule changes, change
docs/architecture.md and this file together.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
AGENT = ROOT / "agent"
STDLIB = frozenset(sys.stdlib_module_names)


@dataclass(frozen=True)
class Import:
    """One imported name as written: ``agent.sink.schema.migrate`` for ``from agent.sink.schema
    import migrate`` (a name or a module: the rules match by prefix, so both work)."""

    module: str  # the importing module, e.g. agent.runner.pipeline
    name: str
    file: str
    line: int

    @property
    def top(self) -> str:
        return self.name.split(".")[0]

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.module} imports {self.name}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> Iterator[Import]:
    """Every import of every module under agent/."""
    for path in sorted(AGENT.rglob("*.py")):
        module, file = module_name(path), str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), filename=file)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, file, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{file}:{node.lineno}: relative import; the rules need absolute ones"
                base = node.module or ""
                for alias in node.names:
                    yield Import(module, f"{base}.{alias.name}", file, node.lineno)


def under(name: str, *prefixes: str) -> bool:
    """Whether ``name`` is one of ``prefixes`` or inside one (``agent.sink`` covers
    ``agent.sink.schema.migrate``, not ``agent.sinkhole``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def in_parse_stage(name: str) -> bool:
    """The parse stage: the package agent/parse/ (decode, builders, field converters, app logs)."""
    return under(name, "agent.parse")


# Each stage may import only these parts of the agent (besides itself), stdlib and the listed
# third-party packages where a list is given (None: any third-party package).
ALLOWED: dict[str, tuple[tuple[str, ...], frozenset[str] | None]] = {
    "agent.contract": ((), frozenset()),
    "agent.model": ((), frozenset()),
    "agent.errors": ((), frozenset()),
    "agent.emit": (("agent.contract",), frozenset({"structlog", "orjson"})),
    "agent.demo.app": (("agent.emit",), frozenset({"structlog", "orjson"})),
    "agent.config": (("agent.errors",), None),
    "agent.sources": (("agent.model", "agent.errors"), None),
    "agent.batcher": (("agent.contract", "agent.model"), None),
    "agent.sink": (("agent.batcher", "agent.config", "agent.contract", "agent.errors", "agent.model",
                    "agent.views.model"), None),
    "agent.ops": ((), None),
    "agent.views": ((), None),
    "agent.embedded": (("agent.errors",), None),
}
# The parse stage and the runner are held by what they must not import instead.
PARSE_FORBIDDEN = ("agent.sources", "agent.batcher", "agent.sink", "agent.runner", "agent.ops", "agent.cli",
                   "agent.demo", "agent.views", "agent.embedded", "agent.emit")
RUNNER_FORBIDDEN = ("agent.cli", "agent.demo", "agent.emit", "agent.views", "agent.embedded")
# Who may import a part of the agent at all (the top of the tree: nothing below depends on it).
IMPORTED_ONLY_BY = {
    "agent.runner": ("agent.runner", "agent.cli", "agent.demo.run"),
    "agent.demo": ("agent.demo", "agent.cli"),
    "agent.cli": ("agent.cli",),
}
# Third-party packages that belong to one stage.
OWNED_BY = {"asyncpg": "agent.sink", "watchfiles": "agent.sources"}


def stage_rule(module: str) -> tuple[str, tuple[tuple[str, ...], frozenset[str] | None]] | None:
    """The most specific ALLOWED entry for ``module`` (agent.demo.app before agent.demo)."""
    matches = [stage for stage in ALLOWED if under(module, stage)]
    if not matches:
        return None
    stage = max(matches, key=len)
    return stage, ALLOWED[stage]


def violations(found: list[Import]) -> list[str]:
    """Every broken rule, one line each: file, line, the import, and the rule."""
    out: list[str] = []
    for imp in found:
        agent_name = imp.top == "agent"
        rule = stage_rule(imp.module)
        if rule is not None:
            stage, (allowed, third_party) = rule
            if agent_name and not under(imp.name, stage, *allowed) and imp.name != "agent":
                out.append(f"{imp.where()}: {stage} may import only {', '.join(allowed) or 'nothing of the agent'}")
            if not agent_name and third_party is not None and imp.top not in STDLIB and imp.top not in third_party:
                out.append(f"{imp.where()}: {stage} may import only the stdlib"
                           + (f" and {', '.join(sorted(third_party))}" if third_party else ""))
        if in_parse_stage(imp.module) and under(imp.name, *PARSE_FORBIDDEN):
            out.append(f"{imp.where()}: the parse stage must not import {', '.join(PARSE_FORBIDDEN)}")
        if under(imp.module, "agent.runner") and under(imp.name, *RUNNER_FORBIDDEN):
            out.append(f"{imp.where()}: the runner must not import {', '.join(RUNNER_FORBIDDEN)}")
        for target, importers in IMPORTED_ONLY_BY.items():
            if under(imp.name, target) and not under(imp.module, *importers):
                out.append(f"{imp.where()}: only {', '.join(importers)} may import {target}")
        owner = OWNED_BY.get(imp.top)
        if owner is not None and not under(imp.module, owner):
            out.append(f"{imp.where()}: only {owner} imports {imp.top}")
    return out


def test_the_tree_keeps_the_import_rules() -> None:
    found = list(imports())
    assert len({i.module for i in found}) > 40, "found too few modules: the walk is broken"
    problems = violations(found)
    assert not problems, "import rules of docs/architecture.md broken:\n" + "\n".join(problems)


def test_the_agent_package_itself_imports_nothing() -> None:
    """``import agent.emit`` runs agent/__init__.py first: it must not pull in the agent."""
    assert [i.where() for i in imports() if i.module == "agent"] == []


def test_a_broken_rule_is_reported_with_file_line_and_import() -> None:
    bad = [
        Import("agent.sources.tailer", "agent.sink.sink.Sink", "agent/sources/tailer.py", 7),
        Import("agent.emit.output", "agent.config.Settings", "agent/emit/output.py", 3),
        Import("agent.emit.output", "pydantic", "agent/emit/output.py", 4),
        Import("agent.parse", "agent.runner.row_id", "agent/parse/__init__.py", 9),
        Import("agent.parse.engine", "agent.sink.writer", "agent/parse/engine.py", 2),
        Import("agent.ops.sync", "asyncpg", "agent/ops/sync.py", 5),
        Import("agent.views.tree", "watchfiles", "agent/views/tree.py", 6),
        Import("agent.sink.sink", "agent.runner.Runner", "agent/sink/sink.py", 8),
    ]
    problems = violations(bad)
    for imp in bad:
        assert any(p.startswith(imp.where()) for p in problems), (imp, problems)
    assert "agent/sources/tailer.py:7: agent.sources.tailer imports agent.sink.sink.Sink" in problems[0]
