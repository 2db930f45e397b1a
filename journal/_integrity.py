"""The checksums the journal stores and verifies: of an entry, a snapshot and a run row,
and the stored rows of new entries (shared by the facade, the recorders, migrate and
verify)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from ._schema import RUN_FIELDS, SEALED_INDEX, run_checksum
from .errors import RunCorrupted
from .records import NewEntry, Run

__all__ = ["entry_checksum", "entry_rows", "run_from_row", "snapshot_checksum"]


def entry_checksum(  # noqa: PLR0917 - one positional per stored column, in column order
    run_id: str,
    seq: int,
    kind: str,
    step: str | None,
    key: str | None,
    payload: bytes | None,
    codec: str,
    ts: float,
) -> int:
    """CRC-32 over every field of an entry: a flipped byte anywhere is detected on read."""
    head = f"{run_id}\x1f{seq}\x1f{kind}\x1f{step}\x1f{key}\x1f{codec}\x1f{ts!r}".encode()
    return zlib.crc32(payload or b"", zlib.crc32(head))


def entry_rows(
    run_id: str, entries: Sequence[NewEntry], base: int, now: float
) -> list[tuple[Any, ...]]:
    """The stored rows of ``entries`` as seqs ``base+1..``, checksums included."""
    return [
        (
            run_id,
            seq,
            e.kind,
            e.step,
            e.key,
            e.payload,
            e.codec,
            now,
            entry_checksum(run_id, seq, e.kind, e.step, e.key, e.payload, e.codec, now),
        )
        for seq, e in enumerate(entries, base + 1)
    ]


def snapshot_checksum(run_id: str, seq: int, state: bytes, fingerprint: str) -> int:
    """CRC-32 over a snapshot's state, tied to its run, seq and fingerprint."""
    return zlib.crc32(state, zlib.crc32(f"{run_id}\x1f{seq}\x1f{fingerprint}".encode()))


_NUMBER = (int, float)
_SHAPE = {
    "last_seq": (int,),
    "epoch": (int,),
    "updated_at": _NUMBER,
    "owner": (str, type(None)),
    "lease_expires_at": (*_NUMBER, type(None)),
    "wake_at": (*_NUMBER, type(None)),
}
"""The types of the columns the checksum leaves out (it covers the others)."""


def run_from_row(row: Sequence[Any] | None, sealed: bool = True) -> Run:
    """The run of a row read with ``run_select``, its checksum verified (``sealed``)."""
    assert row is not None
    *values, checksum = row
    run_id = values[0]
    if sealed and checksum != run_checksum([values[i] for i in SEALED_INDEX]):
        raise RunCorrupted(
            f"run {run_id!r}: its row fails its checksum (its status, input, output, error, "
            "lineage or creation time was altered on disk)",
            run_id=run_id,
        )
    fields = dict(zip(RUN_FIELDS, values, strict=True))
    for name, types in _SHAPE.items():
        if not isinstance(fields[name], types):
            raise RunCorrupted(
                f"run {run_id!r}: its {name} column holds {fields[name]!r}, which no writer "
                "stores (the row was altered on disk)",
                run_id=run_id,
            )
    try:
        fields["meta"] = json.loads(fields["meta"])
    except (TypeError, ValueError) as exc:
        raise RunCorrupted(
            f"run {run_id!r}: its meta column is not a JSON object ({exc})", run_id=run_id
        ) from None
    if not isinstance(fields["meta"], dict):
        raise RunCorrupted(f"run {run_id!r}: its meta column is not a JSON object", run_id=run_id)
    return Run(**fields)
