"""Shared fixtures: every journal opened in a test is closed at its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from journal import Journal


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A journal path inside the test's temporary directory."""
    return tmp_path / "durable.db"


@pytest.fixture
def journal(db_path: Path) -> Iterator[Journal]:
    """A fresh journal, closed after the test."""
    j = Journal(db_path)
    yield j
    j.close()
