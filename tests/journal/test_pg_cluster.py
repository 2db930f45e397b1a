"""The PostgreSQL test harness itself: the ``pg_url`` server answers and commits."""

from __future__ import annotations

import uuid

import pytest

# The driver comes with the `postgres` extra; without it this module skips, not the run.
psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres


def test_server_answers(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_second_connection_sees_committed_row(pg_url: str) -> None:
    table = f"harness_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as writer:
        writer.execute(f"CREATE TABLE {table} (v text)")
        try:
            with writer.transaction():
                writer.execute(f"INSERT INTO {table} VALUES ('committed')")
            with psycopg.connect(pg_url) as reader:
                assert reader.execute(f"SELECT v FROM {table}").fetchall() == [("committed",)]
        finally:
            writer.execute(f"DROP TABLE {table}")


def test_schema_url_names_a_fresh_schema(pg_url: str, pg_schema_url: str) -> None:
    assert pg_schema_url.startswith(pg_url)
    query = pg_schema_url[len(pg_url) :]
    assert query[0] in "?&"
    assert query[1:].startswith("schema=t_")
    assert len(query[1:].removeprefix("schema=t_")) == 12
