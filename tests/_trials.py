"""How many random trials the crash, race and property tests run.

``DURABLE_TRIALS`` scales every trial count of the suite (default 1): ``DURABLE_TRIALS=10``
runs ten times as many random kills, race trials and hypothesis examples (a soak);
``0.5`` half as many. The first ``quick`` trials of a random-kill family run in the
quick set (``pytest -m "not slow"``); the rest carry ``@pytest.mark.slow``.

``on_backends`` does the same for the chosen kill points of a crash matrix: every point
runs on both backends in the full suite, the quick set keeps a few on each.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from typing import Any

import pytest

_RAW = os.environ.get("DURABLE_TRIALS", "1")
try:
    SCALE = float(_RAW)
except ValueError as exc:
    raise ValueError(f"DURABLE_TRIALS must be a number (a scale factor), got {_RAW!r}") from exc
if SCALE <= 0:
    raise ValueError(f"DURABLE_TRIALS must be > 0, got {_RAW!r}")


def scaled(count: int) -> int:
    """``count`` trials scaled by ``DURABLE_TRIALS``, at least 1."""
    return max(1, round(count * SCALE))


def seeds(backend: str, count: int, quick: int, *marks: Any) -> list[Any]:
    """``pytest.param(backend, seed)`` for ``scaled(count)`` seeds; seeds from ``quick`` on
    are ``slow`` (``marks`` go on every one, e.g. ``pytest.mark.postgres``)."""
    return [
        pytest.param(
            backend,
            seed,
            id=f"{backend}-{seed}",
            marks=[*marks, *([pytest.mark.slow] if seed >= quick else [])],
        )
        for seed in range(scaled(count))
    ]


def _on(backend: str, quick: bool) -> list[Any]:
    marks = [pytest.mark.postgres] if backend == "postgresql" else []
    return marks if quick else [*marks, pytest.mark.slow]


def backends(*, sqlite: bool = True, postgresql: bool = False) -> list[Any]:
    """``parametrize("journal_location", backends(...), indirect=True)``: the test on
    both backends, ``slow`` on those not named quick (``sqlite`` / ``postgresql``)."""
    quick = {"sqlite": sqlite, "postgresql": postgresql}
    return [pytest.param(b, id=b, marks=_on(b, quick[b])) for b in ("sqlite", "postgresql")]


def on_backends(
    values: Iterable[Any], *, sqlite: Collection[Any] = (), postgresql: Collection[Any] = ()
) -> list[Any]:
    """``parametrize(("journal_location", NAME), on_backends(...), indirect=["journal_location"])``:
    each value on both backends, ``slow`` unless named quick for that backend."""
    values = list(values)
    quick = {"sqlite": sqlite, "postgresql": postgresql}
    return [
        pytest.param(b, v, id=f"{b}-{v}", marks=_on(b, v in quick[b]))
        for b in ("sqlite", "postgresql")
        for v in values
    ]
