"""The engine's layering, read from its source: the journal owns every SQL statement and
its connections; the engine uses the journal's public operations only.

A statement or a private reach found under ``engine/`` fails here with its file and line;
the fix is an operation on the journal (``Journal`` or a ``journal`` module), implemented
per backend and covered by ``journal/contract.py``. Nothing is allow-listed.

Within the engine, a module uses another module's objects through their non-underscore
names: ``Engine``'s held runs, leases, executions and loop through its methods (``hold``,
``holding``, ``release``, ``execution_of``, ``beat``...), never its attributes. The few
reaches not removed yet are allow-listed below, each with its reason.
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


ALLOWED_REACHES: dict[str, str] = {
    # The workflow model is one unit written in three modules (workflow, workflow_run,
    # workflow_context) that share their privates until they become one package.
    "ctx._bind": "workflow model: a context is bound to its run by the run",
    "_ctx._bind": "workflow model: a context is bound to its run by the run",
    "ctx._scope": "workflow model: the run executes a step in its context's scope",
    "ctx._unfinished_run": "workflow model: a handler started from a context",
    "ctx._seed": "workflow model: a handler started from a context",
    "workflow._resource_manager": "workflow model: the run builds a step's resources",
    "workflow._service": "workflow model: the run injects a step's services",
    "._catch_handler": "workflow model: the run looks up a catch_error handler",
    "wr._finish_with": "workflow model: a handler's cancel ends its run on the run's loop",
    # A Workflow's registered name is a ClassVar of user subclasses: a public name
    # would collide with the attributes users give their workflows.
    "._name": "a Workflow subclass's registered name",
    # Hooks the engine calls on the user-facing Telemetry, RunHandle and DurableFunction:
    # kept private so they are not part of those classes' documented API.
    "telemetry._current_meta": "Telemetry hook",
    "telemetry._creation_meta": "Telemetry hook",
    "telemetry._bind": "Telemetry hook",
    "telemetry._run_begun": "Telemetry hook",
    "telemetry._run_ended": "Telemetry hook",
    "telemetry._workflow_step": "Telemetry hook",
    "telemetry._attempt_failed": "Telemetry hook",
    "handle._future": "RunHandle's in-process future (None when the run executes elsewhere)",
    "fn._codec": "the codec given to @durable (fn.codec would open the default engine)",
    "fn._engine": "the engine given to @durable (fn.engine would make the default one)",
    "os._exit": "the standard library's documented exit without cleanup",
}
"""Reaches into another module's private names still allowed, as ``receiver._name`` (the
receiver's last name; empty for an expression such as ``type(w)``), each with its reason."""
ENGINE_NAMES = {"eng", "engine", "_engine"}
"""Names the engine modules give an ``Engine``: a private reach through one is never allowed."""


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


def _defined(tree: ast.AST) -> set[str]:
    """The names a module defines: its functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _receiver(node: ast.Attribute) -> str:
    """The last name of what ``node`` is read from: ``eng`` for ``eng._x``, ``engine`` for
    ``self.engine._x``, ``self`` for ``type(self)._x``; empty for another expression."""
    value = node.value
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "type" and value.args:
        value = value.args[0]
        return getattr(value, "id", "") if getattr(value, "id", "") in {"self", "cls"} else ""
    if isinstance(value, ast.Attribute):
        return value.attr
    return value.id if isinstance(value, ast.Name) else ""


def engine_privates() -> set[str]:
    """The private attributes and methods of ``Engine`` (engine/runtime.py)."""
    tree = ast.parse((ENGINE / "runtime.py").read_text(encoding="utf-8"))
    engine = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Engine")
    return {n for n in _defined(engine) if n.startswith("_") and not n.startswith("__")}


def cross_module_reaches_in(path: Path, engine_private: set[str] | None = None) -> list[str]:
    """``x._name`` reads of another module's private names: ``x`` is not ``self``/``cls``
    and the module does not define ``_name`` itself (a module's own classes share their
    privates); through an engine (by its name or one of ``Engine``'s private names, outside
    engine/runtime.py), always. Allow-listed reaches are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _defined(tree)
    if engine_private is None:
        engine_private = set() if path == ENGINE / "runtime.py" else engine_privates()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue
        receiver = _receiver(node)
        if receiver in {"self", "cls"}:
            continue
        into_engine = receiver in ENGINE_NAMES or node.attr in engine_private
        if not into_engine and (node.attr in own or f"{receiver}.{node.attr}" in ALLOWED_REACHES):
            continue
        found.append(f"{path.name}:{node.lineno}: {receiver}.{node.attr}")
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


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_private_reach_across_engine_modules(path: Path) -> None:
    """No module reads another module's private names (allow-list aside), and none reads
    ``Engine``'s: held runs, leases, executions and the loop go through its methods."""
    assert cross_module_reaches_in(path) == []


def test_the_allow_list_is_used() -> None:
    """Each allow-listed reach still occurs (a removed one leaves the list)."""
    seen: set[str] = set()
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen.update(
            f"{_receiver(n)}.{n.attr}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr.startswith("_")
        )
    assert sorted(set(ALLOWED_REACHES) - seen) == []


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


def test_the_cross_module_check_catches_what_it_forbids(tmp_path: Path) -> None:
    """Reaches into an engine and into other modules' privates are found; a module's own
    privates, ``self``/``cls`` and allow-listed reaches are not."""
    assert {"_lock", "_running", "_leases", "_executions", "_take"} <= engine_privates()
    bad = tmp_path / "bad.py"
    bad.write_text(
        "class Own:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def same(self, other):\n"
        "        return other._mine, self._mine, type(self)._mine, self.__class__\n"
        "def f(eng, run, item, self):\n"
        "    with eng._lock:\n"
        "        eng._running.get(run.run_id)\n"
        "    self.engine._stopping.is_set()\n"
        "    item.owner._executions\n"
        "    item._secret\n"
        "    type(item)._name\n",
        encoding="utf-8",
    )
    reaches = sorted(r.split(": ", 1)[1] for r in cross_module_reaches_in(bad))
    assert reaches == [
        "eng._lock",
        "eng._running",
        "engine._stopping",
        "item._secret",
        "owner._executions",
    ], reaches
