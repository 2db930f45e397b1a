"""The engine's layering, read from its source: the journal owns every SQL statement and
its connections; the engine uses the journal's public operations only.

A statement or a private reach found under ``engine/`` fails here with its file and line;
the fix is an operation on the journal (``Journal`` or a ``journal`` module), implemented
per backend and covered by ``journal/contract.py``. Nothing is allow-listed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"

SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b|\b(CREATE|DROP|ALTER)\s+(TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\s+\w"
    # Fragments: the part of a statement a caller passes to another that completes it.
    r"|\w\s*(=|<|>|<=|>=|<>|!=)\s*\?|\bIN\s*\(\s*\?|\bLIKE\s+\?|\bGROUP\s+BY\b"
    r"|\bORDER\s+BY\s+\w+(\s+(ASC|DESC))?\s*(,|LIMIT\b|$)|\bLIMIT\s+\?"
    r"|\bpg_\w+\(",  # PostgreSQL's functions (pg_total_relation_size...)
)
"""SQL statements and the fragments of one (``x = ?``, ``IN (?``, ``GROUP BY``...), with
their keywords in capitals as this code base writes them (so prose does not match)."""
DRIVERS = {"apsw", "sqlite3", "sqlite_utils", "psycopg", "psycopg_pool"}
"""Database drivers: the journal's backends hold the connections."""
DB_CALLS = {"execute", "executemany", "executescript", "query", "cursor"}
"""Methods that run SQL: on a connection, or ``Journal.query`` (ad-hoc SQL for users)."""
JOURNAL_INTERNALS = {"backend", "raw_connection", "lock"}
"""Public attributes of ``Journal`` documented for the journal's own tools and tests."""


def _sources() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal; an f-string as its literal parts with ``{}`` for values."""
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, text
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield from [] if id(node) in parts else [(node.lineno, node.value)]


def _journalish(node: ast.expr) -> bool:
    """An expression naming a journal: ``journal``, ``j``, ``x.journal``, ``x._journal``."""
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in {"journal", "_journal", "j"}


def sql_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for line, text in _strings(tree):
        if SQL.search(text):
            found.append(f"{path.name}:{line}: SQL {text.strip()[:60]!r}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DB_CALLS
        ):
            found.append(f"{path.name}:{node.lineno}: runs SQL through .{node.func.attr}()")
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        for module in modules:
            if module.split(".")[0] in DRIVERS:
                found.append(f"{path.name}:{node.lineno}: imports the driver {module}")
    return found


def private_reaches_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            parts = node.module.split(".")
            if parts[0] != "journal":
                continue
            if any(p.startswith("_") for p in parts[1:]):
                found.append(f"{path.name}:{node.lineno}: imports {node.module}")
            found += [
                f"{path.name}:{node.lineno}: imports {node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_")
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno}: imports {a.name}"
                for a in node.names
                if a.name.startswith("journal.")
                and any(p.startswith("_") for p in a.name.split(".")[1:])
            ]
        elif isinstance(node, ast.Attribute) and _journalish(node.value):
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.name}:{node.lineno}: reaches into the journal: .{node.attr}")
            elif node.attr in JOURNAL_INTERNALS:
                found.append(f"{path.name}:{node.lineno}: uses the journal's .{node.attr}")
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_sql_in_the_engine(path: Path) -> None:
    """No SQL statement, fragment, driver or SQL-running call in any engine module."""
    assert sql_in(path) == []


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_private_reach_into_the_journal(path: Path) -> None:
    """The engine imports no private journal module or name, touches no private
    attribute of a journal and no attribute meant for the journal's own tools."""
    assert private_reaches_in(path) == []


def test_the_checks_catch_what_they_forbid(tmp_path: Path) -> None:
    """Each kind of breach is found (so the checks above cannot pass vacuously)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import apsw\n"
        "from journal._recorder import Recorder\n"
        "from journal.store import _private\n"
        "def f(journal, eng, where):\n"
        "    journal.query('SELECT run_id FROM runs')\n"
        "    journal.query(\"SELECT pg_total_relation_size('runs')\")\n"
        "    eng.journal._lock\n"
        "    journal.backend.schema_version\n"
        "    q = f'run_id = ? AND {where}'\n"
        "    return ['status IN (?, ?)', 'GROUP BY queue', 'ORDER BY seq DESC LIMIT 1']\n",
        encoding="utf-8",
    )
    sql = sql_in(bad)
    assert sorted(s.split(": ", 1)[1][:8] for s in sql) == [
        'SQL "SEL',
        "SQL 'GRO",
        "SQL 'ORD",
        "SQL 'SEL",
        "SQL 'run",
        "SQL 'sta",
        "imports ",
        "runs SQL",
        "runs SQL",
    ], sql
    reaches = sorted(r.split(": ", 1)[1] for r in private_reaches_in(bad))
    assert reaches == [
        "imports journal._recorder",
        "imports journal.store._private",
        "reaches into the journal: ._lock",
        "uses the journal's .backend",
    ], reaches
    fine = tmp_path / "fine.py"
    fine.write_text(
        '"""Select the runs from the journal, ordered by time."""\n'
        "from journal import Journal\n"
        "def f(journal, eng):\n"
        "    return journal.list_runs(status='pending'), eng._journal, journal.__class__\n",
        encoding="utf-8",
    )
    assert sql_in(fine) == [] and private_reaches_in(fine) == []
