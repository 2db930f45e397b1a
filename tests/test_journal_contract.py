"""The journal contract, run against the SQLite backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from journal import Journal
from journal.contract import JournalContract


class TestSqliteJournal(JournalContract):
    """Every contract test on the embedded SQLite journal."""

    def open_journal(self, tmp_path: Path, **options: Any) -> Journal:
        return Journal(tmp_path / "contract.db", **options)
