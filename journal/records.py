"""Plain records the journal reads and writes: runs, entries, snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "NewEntry", "ResumeRecord", "Run", "ScheduleRecord", "SnapshotInfo"]


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
class ResumeRecord:
    """The payload of a ``run.resumed`` entry: who reopened the failed run and when, the
    failure it reopens (the seq of its ``run.failed`` entry and the run's error then),
    and the step failures the resumed run executes again rather than replays."""

    by: str
    at: float
    """When the run was reopened (Unix time)."""
    failed_seq: int
    error: str | None
    reopens: tuple[tuple[str, int, str], ...] = ()
    """``(run_id, seq, step key)`` of each final ``step.failed`` entry reopened (the run
    itself, or a run it was forked from)."""

    def to_payload(self) -> dict[str, Any]:
        """The entry's payload (plain JSON values)."""
        return {
            "by": self.by,
            "at": self.at,
            "failed_seq": self.failed_seq,
            "error": self.error,
            "reopens": [{"run": r, "seq": s, "step": k} for r, s, k in self.reopens],
        }

    @classmethod
    def from_payload(cls, payload: Any) -> ResumeRecord:
        """Read a decoded payload back; :class:`ValueError` if it is not one."""
        try:
            reopens = tuple(
                (str(r["run"]), int(r["seq"]), str(r["step"])) for r in payload["reopens"]
            )
            error = payload["error"]
            return cls(
                by=str(payload["by"]),
                at=float(payload["at"]),
                failed_seq=int(payload["failed_seq"]),
                error=None if error is None else str(error),
                reopens=reopens,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a run.resumed payload: {exc}") from None


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
