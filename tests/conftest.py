"""Shared fixtures: every journal opened in a test is closed at its end.

PostgreSQL tests take ``pg_url`` (one server per session: ``$DURABLE_TEST_PG_URL`` or a
throwaway cluster) or ``pg_schema_url`` (that server, one fresh schema per test). Tests
that must hold on both backends take ``journal_location``: a file path, then a schema URL.
"""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal import Journal
from journal.pg_cluster import ClusterUnavailable, TempCluster


def _temp_on_tmpfs() -> None:
    """Temporary files (``tmp_path``, journals, the throwaway PostgreSQL cluster) go to
    tmpfs (``/dev/shm``) when there is one and ``$TMPDIR`` does not say otherwise.

    The SIGKILL tests are most of the suite's time, and much of theirs was fsync: a
    killed process loses nothing the kernel holds, so what they prove does not need a
    disk. Losing what was not fsynced (power loss) is simulated by tests/reliability.
    ``DURABLE_TEST_TMPDIR=DIR`` chooses another place (``DURABLE_TEST_TMPDIR=/tmp``: disk).
    """
    chosen = os.environ.get("DURABLE_TEST_TMPDIR")
    if chosen is None and os.environ.get("TMPDIR"):
        return
    shm = chosen or "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        tempfile.tempdir = shm  # pytest's tmp_path_factory reads tempfile.gettempdir()
        os.environ["TMPDIR"] = shm  # and so do the children the tests start


_temp_on_tmpfs()


def _children_keep_bytecode() -> None:
    """With ``PYTHONDONTWRITEBYTECODE`` set, every child the tests start (hundreds of them)
    compiled the whole of ``engine`` and ``journal`` from source again: about 0.35 CPU
    seconds each, a third of a child's start. They keep their bytecode in a cache of
    their own instead (``PYTHONPYCACHEPREFIX``, under the temporary directory), so the
    checkout stays free of ``__pycache__`` as the variable asked. A prefix chosen by the
    caller is left alone; so is a run without the variable (bytecode goes where Python
    puts it)."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = Path(tempfile.gettempdir()) / f"durable-test-pycache-{os.getuid()}"
    try:
        cache.mkdir(mode=0o700, exist_ok=True)
        info = cache.lstat()
    except OSError:
        return
    # Bytecode is code: a cache someone else could write to is not used.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return
    os.environ.pop("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)


_children_keep_bytecode()


def _no_worker_terminal_size() -> None:
    """A pytest-xdist worker runs with ``COLUMNS=80`` and ``LINES=24`` in its environment;
    the children the tests start would inherit them and wrap their output at 80
    columns, which no test run in one process sees (a piped child uses 120)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


_no_worker_terminal_size()

# Why the PostgreSQL tests did not run, for the terminal summary.
_pg_unavailable = pytest.StashKey[str]()


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


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL URL for the session: ``$DURABLE_TEST_PG_URL``, else a throwaway cluster.

    Without a server the tests that use it skip, or fail when ``$DURABLE_REQUIRE_PG=1``
    (CI): a missing server must not pass as green there.
    """
    url = os.environ.get("DURABLE_TEST_PG_URL")
    if url:
        yield url
        return
    try:
        cluster = TempCluster()
    except ClusterUnavailable as exc:
        reason = f"PostgreSQL unavailable: {exc}"
        request.config.stash[_pg_unavailable] = reason
        if os.environ.get("DURABLE_REQUIRE_PG") == "1":
            pytest.fail(f"{reason}\n(DURABLE_REQUIRE_PG=1: failing, not skipping)")
        pytest.skip(reason)
    with cluster:
        yield cluster.url


@pytest.fixture
def pg_schema_url(pg_url: str) -> str:
    """``pg_url`` with ``schema=t_<12 hex>``: the journal's tables in a schema of its own."""
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's journal lives, once per backend: ``journal.db`` in the test's
    temporary directory, then a fresh PostgreSQL schema (``pg_schema_url``)."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    return str(request.getfixturevalue("pg_schema_url"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say once, at the end, why the PostgreSQL tests did not run."""
    reason = terminalreporter.config.stash.get(_pg_unavailable, None)
    if reason is not None:
        terminalreporter.write_sep("=", "PostgreSQL", yellow=True)
        terminalreporter.write_line(reason)
