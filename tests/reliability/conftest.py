"""Shared settings of the reliability suite: the quick/long switch and a fast scratch dir.

This folder holds the SIGKILL, race, fault and load suites; their child programs are in
``tests/_procs`` and the helpers that start and kill them in ``tests/_children.py``.
The power-loss, I/O-fault, load and model tests below take two sizes.
``DURABLE_LONG=1`` runs their long set: 60 appends instead of 20
per power-loss workload and 4 seeds per crash point, 40 appends per I/O-fault
workload, 10,000 runs instead of 1,000 in the load test, and 500 state-machine
examples instead of 75.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LONG = os.environ.get("DURABLE_LONG") == "1"


def fast_tempdir(prefix: str) -> Path:
    """A new directory on tmpfs when there is one, else in the system temp dir (the
    caller removes it)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


@pytest.fixture(scope="session")
def fast_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one (fsync is free there), else a
    pytest temporary directory.

    The power-loss and fault tests open hundreds of small journals; what they check
    (which bytes reached which file, and in what order) does not depend on the disk.
    """
    path = fast_tempdir("durable-rel-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fast_dir(fast_root: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory under :func:`fast_root` for one test."""
    return Path(
        tempfile.mkdtemp(prefix=request.node.name[:40].replace("/", "_") + "-", dir=fast_root)
    )
