"""pytest plugin (entry point ``pytest11: durable``): the ``durable_crash_check`` fixture.

::

    def test_checkout_survives_crashes(durable_crash_check):
        durable_crash_check(checkout, cart_id=7)

The fixture calls :func:`engine.testing.check_crash_safety` with a journal directory
under the test's ``tmp_path`` and fails the test with the report (the first crash
point whose recovered run differs, and how) unless every crash point recovered to the
uninterrupted outcome. It returns the :class:`~engine.testing.CrashReport`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .testing import CrashReport, check_crash_safety


@pytest.fixture
def durable_crash_check(tmp_path: Path) -> Callable[..., CrashReport]:
    """``durable_crash_check(target, *args, **kwargs)``: crash-check a @durable function or
    Workflow (see :func:`engine.testing.check_crash_safety`); fails the test if unsafe."""
    counter = itertools.count(1)

    def check(target: Any, *args: Any, **kwargs: Any) -> CrashReport:
        db_dir = tmp_path / f"durable-crash-check-{next(counter)}"
        report = check_crash_safety(target, *args, db_dir=db_dir, **kwargs)
        if not report.ok:
            pytest.fail(report.render(), pytrace=False)
        return report

    return check
