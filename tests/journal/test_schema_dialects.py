"""One declaration of the tables (journal/_ddl.py), rendered for SQLite and PostgreSQL:
both dialects create the same tables, columns, keys and indexes (read back from each
database's catalog), and an upgraded old file ends with the schema a new one has."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import apsw
import pytest

from journal import Journal
from journal._ddl import INDEXES, TABLES, create, upgrade

FIXTURES = Path(__file__).parents[1] / "fixtures"
_TYPES = {
    "TEXT": "text",
    "BLOB": "blob",
    "REAL": "real",
    "INTEGER": "integer",
    "text": "text",
    "bytea": "blob",
    "double precision": "real",
    "integer": "integer",
    "bigint": "integer",
}
"""Each catalog's type names, to the kinds both dialects share (SQLite has one
integer type for the vocabulary's int and bigint)."""

Schema = dict[str, Any]


def _sqlite_schema(path: Path) -> Schema:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        schema: Schema = {}
        for table in tables:
            columns = [
                (name, _TYPES[type_], bool(notnull), dflt)
                for _, name, type_, notnull, dflt, _pk in conn.execute(
                    f"PRAGMA table_info({table})"
                )
            ]
            pk = [
                name
                for *_, name, _t, _n, _d, pk in sorted(
                    conn.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5]
                )
                if pk
            ]
            indexes = {}
            for _, name, _unique, origin, _partial in conn.execute(f"PRAGMA index_list({table})"):
                if origin != "c":
                    continue  # the primary key's own index
                indexes[name] = [
                    f"{col} DESC" if desc else col
                    for _, _, col, desc, _, key in conn.execute(f"PRAGMA index_xinfo({name})")
                    if key
                ]
            schema[table] = {"columns": columns, "pk": pk, "indexes": indexes}
        return schema
    finally:
        conn.close()


def _pg_schema(url: str) -> Schema:
    with Journal(url) as j:
        db, name = j.backend, j.backend.schema  # type: ignore[attr-defined]
        rows = db.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = ?"
            " ORDER BY table_name, ordinal_position",
            (name,),
        ).fetchall()
        keys = db.execute(
            "SELECT k.table_name, k.column_name FROM information_schema.table_constraints c"
            " JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name"
            " AND k.table_schema = c.table_schema"
            " WHERE c.table_schema = ? AND c.constraint_type = 'PRIMARY KEY'"
            " ORDER BY k.table_name, k.ordinal_position",
            (name,),
        ).fetchall()
        indexes = db.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = ?"
            " AND indexname NOT LIKE '%%_pkey'",
            (name,),
        ).fetchall()
    schema: Schema = {}
    for table, column, type_, nullable, default in rows:
        entry = schema.setdefault(table, {"columns": [], "pk": [], "indexes": {}})
        spelled = None if default is None else re.sub(r"::[a-z ]+$", "", default)
        entry["columns"].append((column, _TYPES[type_], nullable == "NO", spelled))
    for table, column in keys:
        schema[table]["pk"].append(column)
    for table, index, definition in indexes:
        inside = re.search(r"\((.*)\)$", definition)
        assert inside is not None, definition
        schema[table]["indexes"][index] = [c.strip() for c in inside.group(1).split(",")]
    return schema


def _without_pk_notnull(schema: Schema) -> Schema:
    """PostgreSQL makes every primary-key column NOT NULL; SQLite's catalog says NOT NULL
    only where it was written: compare the keys apart."""
    out: Schema = {}
    for table, entry in schema.items():
        columns = [(n, t, False if n in entry["pk"] else nn, d) for n, t, nn, d in entry["columns"]]
        out[table] = {**entry, "columns": columns}
    return out


@pytest.mark.postgres
def test_both_dialects_create_the_same_schema(tmp_path: Path, pg_schema_url: str) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    lite = _sqlite_schema(path)
    pg = _pg_schema(pg_schema_url)
    assert set(pg) - set(lite) == {"journal_meta"}  # a file keeps these in its header
    del pg["journal_meta"]
    assert _without_pk_notnull(lite) == _without_pk_notnull(pg)
    declared = {t.name: t for t in TABLES if "sqlite" in t.dialects}
    assert set(lite) == set(declared)
    for name, table in declared.items():
        assert [c[0] for c in lite[name]["columns"]] == [c.name for c in table.columns]
        assert lite[name]["pk"] == list(table.primary_key)
        assert lite[name]["indexes"] == {
            i.name: list(i.columns) for i in INDEXES if i.table == name
        }


@pytest.mark.parametrize("fixture", ["journal_v2.db", "journal_v3.db", "journal_v4.db"])
def test_an_upgraded_file_has_the_schema_of_a_new_one(tmp_path: Path, fixture: str) -> None:
    """Each old version's file, opened for writing, ends with a new file's tables,
    columns (in order, with their types, NOT NULL and defaults), keys and indexes."""
    new = tmp_path / "new.db"
    Journal(new).close()
    old = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, old)
    Journal(old).close()
    assert _backfilled(_sqlite_schema(old)) == _backfilled(_sqlite_schema(new))


def _backfilled(schema: Schema) -> Schema:
    """A column an upgrade added NOT NULL keeps the default it filled old rows with
    (``backfill``); a new file's has none: compare without it."""
    filled = {(t.name, c.name) for t in TABLES for c in t.columns if c.backfill is not None}
    for table, entry in schema.items():
        entry["columns"] = [
            (n, t, nn, None if (table, n) in filled else d) for n, t, nn, d in entry["columns"]
        ]
    return schema


def test_the_rendering_spells_each_dialect() -> None:
    lite, pg = "\n".join(create("sqlite")), "\n".join(create("postgresql"))
    assert "BYTEA" in pg and "DOUBLE PRECISION" in pg and "WITHOUT ROWID" not in pg
    assert "BLOB" in lite and "WITHOUT ROWID" in lite and "journal_meta" not in lite
    assert upgrade("sqlite", 3) == (
        "ALTER TABLE runs ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0",
    )
    assert upgrade("postgresql", 5)[0] == (
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS started_at DOUBLE PRECISION"
    )
    with pytest.raises(ValueError, match="unknown dialect"):
        create("mysql")
