"""Integrity checks over a journal file: what ``durable verify`` reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .encryption import PREFIX, EncryptedCodec, Place, check_place
from .errors import JournalError
from .fold import FoldedState, fold
from .lineage import ancestors
from .tags import check_tags

if TYPE_CHECKING:
    from .store import Journal

__all__ = ["VerifyReport", "check_places", "verify"]


@dataclass
class VerifyReport:
    """Problems found (empty when the journal is sound) and how much was checked."""

    runs: int = 0
    entries: int = 0
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def verify(
    journal: Journal,
    run_id: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check ``PRAGMA integrity_check``, every run row's checksum and lineage (no fork or
    parent cycle), every entry's checksum and seq density, that every snapshot
    equals the fold of the entries before it, and that every encrypted value is read
    where it was sealed (:class:`~journal.MisplacedPayload`, found without the key),
    and that the ``run_tags`` index holds each run's recorded tags and nothing else.
    Values are read as readers read them (``strict=False``): no pickle is loaded that
    the journal does not trust, and no class needs to be importable."""
    report = VerifyReport()
    db = journal.backend
    try:
        with journal.lock:
            report.problems += db.integrity_problems()
    except db.errors as exc:
        report.problems.append(f"integrity_check could not run: {exc}")
    try:
        # Ids only: one altered row must not hide the others (each is read on its own).
        ids = [run_id] if run_id else journal.run_ids()
    except JournalError as exc:
        report.problems.append(f"cannot list the runs: {exc}")
        return report
    sealed: dict[str, Any] = {}  # the tags each readable run recorded when it started
    for i, rid in enumerate(ids):
        report.runs += 1
        try:
            sealed[rid] = _verify_run(journal, rid, report)
        except JournalError as exc:
            report.problems.append(str(exc))
        if progress:
            progress(i + 1, len(ids))
    try:
        _verify_tags(journal, run_id, set(ids), sealed, report)
    except JournalError as exc:
        report.problems.append(f"cannot check the run tags: {exc}")
    return report


def _verify_tags(
    journal: Journal,
    run_id: str | None,
    ids: set[str],
    sealed: dict[str, Any],
    report: VerifyReport,
) -> None:
    """The ``run_tags`` index against the tags each run sealed in its row: no row for a
    run that does not exist, none malformed, and each run's rows exactly its tags."""
    db = journal.backend
    if db.schema_version < 4:
        return  # no tags before version 4
    sql = "SELECT run_id, key, value FROM run_tags"
    params: tuple[str, ...] = ()
    if run_id is not None:
        sql, params = sql + " WHERE run_id = ?", (run_id,)
    with journal.lock:
        rows = journal._read("reading the run tags", lambda: db.execute(sql, params).fetchall())
    indexed: dict[str, dict[str, str]] = {}
    for rid, key, value in sorted(rows, key=repr):
        if not isinstance(rid, str) or rid not in ids:
            report.problems.append(
                f"run_tags: tag {key!r}={value!r} indexes run {rid!r}, which does not exist"
            )
            continue
        try:
            check_tags({key: value})
        except (TypeError, ValueError) as exc:
            report.problems.append(f"run {rid!r}: run_tags holds a malformed tag ({exc})")
            continue
        if key in indexed.setdefault(rid, {}):
            report.problems.append(
                f"run {rid!r}: run_tags indexes tag {key!r} under two values "
                f"({indexed[rid][key]!r} and {value!r})"
            )
        indexed[rid][key] = value
    for rid in sorted(sealed):
        recorded = sealed[rid]
        if recorded is None:
            recorded = {}
        elif not isinstance(recorded, dict):
            report.problems.append(f"run {rid!r}: its recorded tags are not a JSON object")
            continue
        try:
            check_tags(recorded)
        except (TypeError, ValueError) as exc:
            report.problems.append(f"run {rid!r}: its recorded tags are malformed ({exc})")
            continue
        found = indexed.get(rid, {})
        for key in sorted(recorded.keys() | found.keys()):
            if recorded.get(key) != found.get(key):
                report.problems.append(
                    f"run {rid!r}: tag {key!r} is {_tag(recorded, key)} in the run but "
                    f"{_tag(found, key)} in run_tags"
                )


def _tag(tags: dict[str, Any], key: str) -> str:
    return repr(tags[key]) if key in tags else "absent"


def _verify_run(journal: Journal, run_id: str, report: VerifyReport) -> Any:
    """Check one run; return the tags it recorded when it started (``meta["tags"]``)."""
    run = journal.get_run(run_id)
    if run.codec.startswith(PREFIX):
        for name in ("input", "output"):
            data = getattr(run, name)
            if data is not None:
                _check_place(data, Place(name, run_id))
    for snap in journal.snapshots(run_id):
        if snap.codec.startswith(PREFIX):
            with journal.lock:
                row = journal._read(
                    "reading a snapshot", journal.backend.snapshot_at, run_id, snap.seq
                )
            if row is not None:
                _check_place(bytes(row[0]), Place("snapshot", run_id, snap.seq))
    for link in ("fork", "parent"):
        for _ in ancestors(journal, run, link=link):
            pass
    snaps = {s.seq: s for s in journal.snapshots(run_id)}
    state = journal.state_at(run_id, run.horizon, strict=False)
    for entry in journal.read(run_id, run.horizon + 1):
        if entry.payload is not None and entry.codec.startswith(PREFIX):
            _check_place(entry.payload, Place("entry", run_id, entry.seq))
        fold(state, [entry], lambda e: journal.decode_entry(e, strict=False))
        report.entries += 1
        if entry.seq in snaps:
            _check_snapshot(journal, run_id, entry.seq, state, report)
    if state.seq != run.last_seq:
        report.problems.append(
            f"run {run_id!r}: last_seq is {run.last_seq} but entries end at {state.seq}"
        )
    return run.meta.get("tags")


def check_places(journal: Journal, run_id: str) -> None:
    """Raise :class:`~journal.MisplacedPayload` at the run's first encrypted value (its
    input, output, an entry, a snapshot) sealed for another place; read from the values'
    headers, so no key is needed and nothing is decrypted or decoded."""
    run = journal.get_run(run_id)
    for name in ("input", "output"):
        data = getattr(run, name)
        if data is not None and run.codec.startswith(PREFIX):
            _check_place(data, Place(name, run_id))
    for entry in journal.read(run_id, run.horizon + 1):
        if entry.payload is not None and entry.codec.startswith(PREFIX):
            _check_place(entry.payload, Place("entry", run_id, entry.seq))
    for snap in journal.snapshots(run_id):
        if snap.codec.startswith(PREFIX):
            with journal.lock:
                row = journal._read(
                    "reading a snapshot", journal.backend.snapshot_at, run_id, snap.seq
                )
            if row is not None:
                _check_place(bytes(row[0]), Place("snapshot", run_id, snap.seq))


def _check_place(data: bytes, place: Place) -> None:
    """Raise :class:`~journal.MisplacedPayload` if the encrypted ``data`` read at ``place``
    was sealed for another place (read from its header: no key needed)."""
    where = str(place)
    check_place(EncryptedCodec.placed(data, where=where), place, None, where)


def _check_snapshot(
    journal: Journal, run_id: str, seq: int, folded: FoldedState, report: VerifyReport
) -> None:
    report.snapshots += 1
    with journal.lock:
        stored = journal._snapshot_state(journal.get_run(run_id), seq, strict=False)
    if stored is None or stored.seq != seq:
        return  # written under another fold version: skipped by readers, not trusted
    if stored.values != folded.values or stored.pending != folded.pending:
        report.problems.append(
            f"run {run_id!r}: snapshot at seq {seq} differs from the fold of its entries"
        )
