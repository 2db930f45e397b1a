"""The journal's tables, declared once and rendered to each dialect's SQL.

Each column, table and index says the schema version that added it (``since``), so the
same declaration gives both a new journal's statements (:func:`create`) and the
statements taking an older journal up to each version (:func:`upgrade`). Columns take
a small type vocabulary, spelled per dialect in :data:`TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DIALECTS", "TABLES", "TYPES", "Column", "Index", "Table", "create", "upgrade"]

DIALECTS = ("sqlite", "postgresql")

TYPES: dict[str, dict[str, str]] = {
    "text": {"sqlite": "TEXT", "postgresql": "TEXT"},
    "blob": {"sqlite": "BLOB", "postgresql": "BYTEA"},
    "real": {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION"},
    "int": {"sqlite": "INTEGER", "postgresql": "INTEGER"},
    "bigint": {"sqlite": "INTEGER", "postgresql": "BIGINT"},
}
"""The type vocabulary: ``bigint`` holds seqs, epochs and checksums (64-bit)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``default`` is an SQL literal both dialects read alike; ``backfill``
    is the default an upgrade gives the rows already there (a NOT NULL column added to
    a table that has rows)."""

    name: str
    type: str
    not_null: bool = False
    default: str | None = None
    references: str | None = None
    since: int = 1
    backfill: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """One table; ``clustered``: stored in primary-key order (SQLite ``WITHOUT ROWID``;
    PostgreSQL has no such option and stores it as any table)."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    since: int = 1
    clustered: bool = False
    dialects: tuple[str, ...] = DIALECTS


@dataclass(frozen=True, slots=True)
class Index:
    """An index; a column may be followed by ``DESC``."""

    name: str
    table: str
    columns: tuple[str, ...]
    since: int = 1


_RUN = "runs(run_id)"

TABLES: tuple[Table, ...] = (
    # PostgreSQL's version and application mark (a file keeps them in its header).
    Table(
        "journal_meta",
        (Column("key", "text"), Column("value", "text", not_null=True)),
        ("key",),
        dialects=("postgresql",),
    ),
    Table(
        "runs",
        (
            Column("run_id", "text"),
            Column("kind", "text", not_null=True),
            Column("name", "text", not_null=True),
            Column("status", "text", not_null=True),
            Column("codec", "text", not_null=True),
            Column("input", "blob"),
            Column("output", "blob"),
            Column("error", "text"),
            Column("created_at", "real", not_null=True),
            Column("updated_at", "real", not_null=True),
            Column("last_seq", "bigint", not_null=True, default="0"),
            Column("epoch", "bigint", not_null=True, default="0"),
            Column("owner", "text"),
            Column("lease_expires_at", "real"),
            Column("wake_at", "real"),
            Column("parent_run_id", "text", references=_RUN),
            Column("forked_from", "text", references=_RUN),
            Column("forked_at", "bigint"),
            Column("code_version", "text"),
            Column("snapshot_every", "bigint"),
            Column("horizon", "bigint", not_null=True, default="0"),
            Column("meta", "text", not_null=True, default="'{}'"),
            # version 2: the durable queue (enqueue with a queue name and a priority).
            Column("queue", "text", since=2),
            Column("priority", "int", not_null=True, default="0", since=2),
            # version 3: run rows are checksummed (reseal_runs fills it for old rows).
            Column("checksum", "bigint", not_null=True, since=3, backfill="0"),
            # version 5: when a queued run was first claimed (a queue's rate limit
            # counts these inside the claim) and the progress its steps last reported.
            # Neither is sealed nor read with the run: both change as workers go.
            Column("started_at", "real", since=5),
            Column("heartbeat", "text", since=5),
        ),
        ("run_id",),
    ),
    Table(
        "entries",
        (
            Column("run_id", "text", not_null=True, references=_RUN),
            Column("seq", "bigint", not_null=True),
            Column("kind", "text", not_null=True),
            Column("step", "text"),
            Column("key", "text"),
            Column("payload", "blob"),
            Column("codec", "text", not_null=True),
            Column("ts", "real", not_null=True),
            Column("checksum", "bigint", not_null=True),
        ),
        ("run_id", "seq"),
        clustered=True,
    ),
    Table(
        "snapshots",
        (
            Column("run_id", "text", not_null=True, references=_RUN),
            Column("seq", "bigint", not_null=True),
            Column("state", "blob", not_null=True),
            Column("codec", "text", not_null=True),
            Column("fingerprint", "text", not_null=True),
            Column("checksum", "bigint", not_null=True),
            Column("created_at", "real", not_null=True),
        ),
        ("run_id", "seq"),
        clustered=True,
    ),
    # Version 4: run tags (the sealed copy is the "tags" object of runs.meta; run_tags
    # is its index, written in the run's creating transaction) and schedules.
    Table(
        "run_tags",
        (
            Column("key", "text", not_null=True),
            Column("value", "text", not_null=True),
            Column("run_id", "text", not_null=True, references=_RUN),
        ),
        ("key", "value", "run_id"),
        since=4,
        clustered=True,
    ),
    Table(
        "schedules",
        (
            Column("name", "text"),
            Column("target", "text", not_null=True),
            Column("cron", "text", not_null=True),
            Column("timezone", "text", not_null=True),
            Column("missed", "text", not_null=True),
            Column("codec", "text", not_null=True),
            Column("input", "blob"),
            Column("tags", "text", not_null=True, default="'{}'"),
            Column("queue", "text"),
            Column("origin", "text", not_null=True),
            Column("created_at", "real", not_null=True),
            Column("paused", "int", not_null=True, default="0"),
            Column("next_at", "real"),
            Column("updated_at", "real", not_null=True),
            Column("checksum", "bigint", not_null=True),
        ),
        ("name",),
        since=4,
    ),
)

INDEXES: tuple[Index, ...] = (
    Index("runs_by_queue", "runs", ("status", "queue", "priority DESC", "created_at"), since=2),
    Index("runs_by_status", "runs", ("status", "wake_at", "lease_expires_at")),
    Index("runs_by_name", "runs", ("name", "created_at")),
    Index("runs_by_created", "runs", ("created_at",)),
    Index("runs_by_parent", "runs", ("parent_run_id",)),
    Index("runs_by_start", "runs", ("queue", "started_at"), since=5),
    Index("run_tags_by_run", "run_tags", ("run_id",), since=4),
    Index("schedules_by_next", "schedules", ("paused", "next_at"), since=4),
)


def _column(col: Column, table: Table, dialect: str, *, added: bool = False) -> str:
    parts = [col.name, TYPES[col.type][dialect]]
    if table.primary_key == (col.name,):
        parts.append("PRIMARY KEY")
    if col.not_null:
        parts.append("NOT NULL")
    default = col.default if col.default is not None else (col.backfill if added else None)
    if default is not None:
        parts.append(f"DEFAULT {default}")
    if col.references:
        parts.append(f"REFERENCES {col.references}")
    return " ".join(parts)


def _table(table: Table, dialect: str, *, if_not_exists: bool) -> str:
    lines = [_column(c, table, dialect) for c in table.columns]
    if len(table.primary_key) > 1:
        lines.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    body = ",\n    ".join(lines)
    guard = "IF NOT EXISTS " if if_not_exists else ""
    tail = " WITHOUT ROWID" if table.clustered and dialect == "sqlite" else ""
    return f"CREATE TABLE {guard}{table.name} (\n    {body}\n){tail}"


def _index(index: Index, *, if_not_exists: bool) -> str:
    guard = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE INDEX {guard}{index.name} ON {index.table}({', '.join(index.columns)})"


def _tables(dialect: str) -> list[Table]:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}: one of {DIALECTS}")
    return [t for t in TABLES if dialect in t.dialects]


def create(dialect: str) -> tuple[str, ...]:
    """The statements creating a new journal's tables and indexes in ``dialect``."""
    tables = _tables(dialect)
    names = {t.name for t in tables}
    return (
        *(_table(t, dialect, if_not_exists=False) for t in tables),
        *(_index(i, if_not_exists=False) for i in INDEXES if i.table in names),
    )


def upgrade(dialect: str, version: int) -> tuple[str, ...]:
    """The statements taking a ``dialect`` journal from ``version - 1`` to ``version``:
    its new tables, the columns it added to older tables, its new indexes."""
    statements: list[str] = []
    for table in _tables(dialect):
        if table.since == version:
            statements.append(_table(table, dialect, if_not_exists=True))
        elif table.since < version:
            guard = "IF NOT EXISTS " if dialect == "postgresql" else ""
            statements += [
                f"ALTER TABLE {table.name} ADD COLUMN {guard}"
                + _column(c, table, dialect, added=True)
                for c in table.columns
                if c.since == version
            ]
    statements += [_index(i, if_not_exists=True) for i in INDEXES if i.since == version]
    return tuple(statements)
