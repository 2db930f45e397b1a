"""Plain records the journal reads and writes: runs, entries, snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "NewEntry", "Run", "ScheduleRecord", "SnapshotInfo"]


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry about to be appended; its payload is already encoded by a codec.

    Build one with :meth:`journal.Journal.entry`, which encodes the value and so
    raises :class:`~journal.SerializationError` before anything is written.
    """

    kind: str
    payload: bytes | None = None
    codec: str = "json"
    step: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored entry of a run: ``(run_id, seq)`` is its identity, seq dense from 1."""

    run_id: str
    seq: int
    kind: str
    step: str | None
    key: str | None
    payload: bytes | None
    codec: str
    ts: float


@dataclass(frozen=True, slots=True)
class Run:
    """A run's row: identity, status, lease and the seq of its last entry."""

    run_id: str
    kind: str
    name: str
    status: str
    codec: str
    input: bytes | None
    output: bytes | None
    error: str | None
    created_at: float
    updated_at: float
    last_seq: int
    epoch: int
    owner: str | None = None
    lease_expires_at: float | None = None
    wake_at: float | None = None
    parent_run_id: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    code_version: str | None = None
    snapshot_every: int | None = None
    horizon: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int = 0

    @property
    def finished(self) -> bool:
        """True once the run is completed, failed or cancelled."""
        return self.status in ("completed", "failed", "cancelled")

    @property
    def tags(self) -> dict[str, str]:
        """The run's tags (``start(..., tags=...)``), kept in its sealed ``meta`` column."""
        tags = self.meta.get("tags")
        return dict(tags) if isinstance(tags, dict) else {}


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule: what it starts (``target`` with ``input``), when (``cron`` in
    ``timezone``), and the next tick it will fire (``next_at``, Unix time)."""

    name: str
    target: str
    cron: str
    timezone: str
    missed: str
    codec: str
    input: bytes | None
    tags: dict[str, str]
    queue: str | None
    origin: str
    """``"code"`` (``@durable(schedule=...)``, written by each worker) or ``"api"``."""
    created_at: float
    paused: bool
    next_at: float | None
    """The next tick to fire; ``None`` when the expression has no future tick."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Where a snapshot lies and how big it is."""

    run_id: str
    seq: int
    codec: str
    fingerprint: str
    size: int
    created_at: float
