"""One checkpoint told in order: what went in, what came out, the state it changed, then
the journal entries it is made of. Reads only; payloads are decoded with
``strict=False`` (placeholders, never a pickle the journal does not trust)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from journal import DecodeError, EntryKind, Journal, Run, to_jsonable
from journal import payloads as P

from ..recorded import lineage
from ..timetravel import Checkpoint
from . import views

K = EntryKind

MAX_ENTRIES = 200
"""Journal entries listed for one checkpoint."""

MUTATIONS = {K.STATE_SET: "set", K.STATE_DELETED: "deleted", K.STATE_APPENDED: "appended"}


def entries_of(journal: Journal, cp: Checkpoint) -> list[dict[str, Any]]:
    """The journal entries that make up checkpoint ``cp``, payloads decoded."""
    out = []
    for entry in itertools.islice(journal.read(cp.run_id, cp.first_seq, cp.seq), MAX_ENTRIES):
        value: Any
        try:
            raw = journal.decode_entry(entry, strict=False)
        except DecodeError as exc:
            value = {"undecodable": str(exc)}
        else:
            is_event = entry.kind in (K.EVENT_EMITTED, K.EVENT_RECEIVED) and isinstance(raw, dict)
            value = views.events_of(raw) if is_event else to_jsonable(raw)
        out.append(
            {
                "seq": entry.seq,
                "kind": entry.kind,
                "step": entry.step,
                "key": entry.key,
                "value": value,
                "ts": entry.ts,
            }
        )
    return out


def consumed_by(journal: Journal, run: Run, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The events a step consumed, found by delivery key where they were emitted or
    received (in the run or, for a fork, in its sources)."""
    if not keys:
        return []
    segments = [r for r, _ in lineage(journal, run)]
    found: dict[str, Any] = {}
    for entry in journal.find_entries(
        segments, [K.EVENT_EMITTED, K.EVENT_RECEIVED], keys=list(dict.fromkeys(keys))
    ):
        try:
            payload = journal.decode_entry(entry, strict=False)
            found[str(entry.key)] = views.events_of(payload)
        except (DecodeError, AttributeError) as exc:
            found[str(entry.key)] = {"undecodable": str(exc)}
    return [{"key": k, "event": found.get(k)} for k in keys]


def outcome(cp: Checkpoint, entries: Sequence[dict[str, Any]], output: Any) -> dict[str, Any]:
    """What the checkpoint produced: a step's result or error, a run's output or failure,
    an event received, a child's outcome, a timer. ``output``: the run's decoded output."""
    own = next((e for e in reversed(entries) if e["seq"] == cp.seq), None)
    value = own["value"] if own is not None else None
    if cp.kind == K.STEP_COMPLETED and isinstance(value, dict) and "result" in value:
        return {"label": "result", "value": value["result"]}
    if cp.kind == K.RUN_FAILED:
        failed = P.read_run_failed(value)
        return {"label": "error", "value": failed.message, "traceback": failed.traceback}
    if cp.kind == K.STEP_FAILED:
        step = P.read_step_failed(value)
        return {"label": "error", "value": step.message, "traceback": None}
    if cp.kind == K.RUN_COMPLETED:
        return {"label": "output", "value": output}
    labels = {K.EVENT_RECEIVED: "event", K.CHILD_COMPLETED: "child's outcome"}
    return {"label": labels.get(cp.kind, "recorded"), "value": value}


def mutations(cp: Checkpoint, entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The state changes recorded in the checkpoint: made inside the step (an entry
    that names it), and made by the body before the step (an entry that names none)."""
    out: dict[str, list[dict[str, Any]]] = {"step": [], "body": []}
    for e in entries:
        if e["kind"] in MUTATIONS:
            change = {"op": MUTATIONS[e["kind"]], "key": e["key"], "value": e["value"]}
            out["step" if e["step"] else "body"].append({**change, "seq": e["seq"]})
    return out
