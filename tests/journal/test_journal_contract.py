"""The journal contract, run against the SQLite and the PostgreSQL backends: at the
facade (Journal) and at the recorder (the operations each backend implements)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from journal._backend import open_backend
from journal._recorder import Recorder
from journal.contract import JournalContract, RecorderContract


class TestSqliteJournal(JournalContract):
    """Every contract test on the embedded SQLite journal."""

    def open_journal(self, tmp_path: Path, **options: Any) -> Journal:
        return Journal(tmp_path / "contract.db", **options)


@pytest.mark.postgres
class TestPostgresJournal(JournalContract):
    """Every contract test on the PostgreSQL backend (a schema of its own per test)."""

    @pytest.fixture(autouse=True)
    def _server(self, pg_url: str) -> None:
        self.base = pg_url

    def open_journal(self, tmp_path: Path, **options: Any) -> Journal:
        # One schema per test, the same each time the test reopens its journal.
        schema = "t_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
        return Journal(f"{self.base}?schema={schema}", **options)


class TestSqliteRecorder(RecorderContract):
    """The recorder operations of a journal file."""

    def open_recorder(self, tmp_path: Path) -> Recorder:
        return open_backend(
            str(tmp_path / "recorder.db"),
            durability="process",
            busy_timeout_ms=5000,
            readonly=False,
        )


@pytest.mark.postgres
class TestPostgresRecorder(RecorderContract):
    """The recorder operations of a PostgreSQL journal (a schema of its own per test)."""

    @pytest.fixture(autouse=True)
    def _server(self, pg_schema_url: str) -> None:
        self.url = pg_schema_url

    def open_recorder(self, tmp_path: Path) -> Recorder:
        return open_backend(self.url, durability="process", busy_timeout_ms=5000, readonly=False)
