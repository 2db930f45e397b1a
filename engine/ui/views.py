"""What the UI shows, as plain data: runs and checkpoints as JSON, the Gantt timeline,
and parsing of query parameters. No web framework here, so it is easy to test."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from journal import EntryKind, Run, Undecoded, to_jsonable
from journal import payloads as P

from .._render import resumed_text
from ..errors import BadRequest
from ..timetravel import Checkpoint
from .story import Owners, Takeover

K = EntryKind

TRACK = 1000.0
"""Width of a timeline track in SVG user units (each row's SVG is stretched to fit)."""

MIN_BAR = 4.0
"""The narrowest bar drawn, so that instantaneous work stays visible and clickable."""


# -- parameters --------------------------------------------------------------------------


def int_param(
    value: str | None, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """``value`` as an int (``None`` when absent or empty); 400 if it is not one."""
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise BadRequest(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise BadRequest(f"{name} must be <= {maximum}, got {number}")
    return number


def time_param(value: str | None, name: str) -> float | None:
    """A Unix timestamp or an ISO-8601 date/time (local time if it names no zone)."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise BadRequest(f"{name} must be a finite timestamp, got {value!r}")
        return number
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name} must be a Unix timestamp or an ISO-8601 time "
            f"(e.g. 2025-01-31T09:30), got {value!r}"
        ) from None
    return when.timestamp()


def status_param(values: Sequence[str], allowed: Sequence[str]) -> list[str] | None:
    """``?status=a&status=b`` or ``?status=a,b``; ``None`` when no status is asked for."""
    statuses = [s.strip() for v in values for s in v.split(",") if s.strip()]
    bad = [s for s in statuses if s not in allowed]
    if bad:
        raise BadRequest(f"unknown status {bad[0]!r}; expected one of {', '.join(allowed)}")
    return statuses or None


# -- formatting --------------------------------------------------------------------------


def fmt_time(ts: float | None, *, date: bool = True) -> str:
    """Local wall-clock time, to the millisecond."""
    if ts is None:
        return ""
    when = dt.datetime.fromtimestamp(ts)
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{when.microsecond // 1000:03d}"


def fmt_duration(seconds: float | None) -> str:
    """A short human duration: ``850 µs``, ``12 ms``, ``3.4 s``, ``2 min 5 s``, ``3 h 10 min``."""
    if seconds is None:
        return ""
    s = max(seconds, 0.0)
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def preview(value: Any, limit: int = 80) -> str:
    """One line of JSON, cut to ``limit`` characters: the summary of a folded value."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_json_text(value: Any) -> str:
    """A scalar as JSON text (strings quoted), for display; escaped by the template."""
    return json.dumps(value, ensure_ascii=False, default=str)


# -- JSON documents ------------------------------------------------------------------------


def run_doc(run: Run) -> dict[str, Any]:
    """A run's row as JSON (times are Unix timestamps)."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "finished": run.finished,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "last_seq": run.last_seq,
        "parent_run_id": run.parent_run_id,
        "forked_from": run.forked_from,
        "forked_at_seq": run.forked_at,
        "wake_at": run.wake_at,
        "error": run.error,
    }


def checkpoint_doc(cp: Checkpoint) -> dict[str, Any]:
    """A checkpoint as JSON: what happened, when, and what it changed."""
    return cp.to_json()


# -- the timeline ------------------------------------------------------------------------


@dataclass
class Bar:
    """One drawn bar: geometry in track units, a CSS class and the checkpoint it selects."""

    x: float
    width: float
    cls: str
    number: int | None
    title: str


@dataclass
class _Span:
    start: float
    end: float | None  # None: still open (a sleep not yet woken, a child still running)
    cls: str
    number: int | None
    title: str


@dataclass
class Row:
    """One line of the Gantt chart: a step with its attempts, a sleep, a child run,
    an event or the run's end."""

    label: str
    kind: str
    numbers: list[int] = field(default_factory=list)
    note: str = ""
    child: str | None = None
    inherited: bool = False
    spans: list[_Span] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    duration: float | None = None


@dataclass
class Timeline:
    """The rows of a run's Gantt chart and the wall-clock span they cover."""

    rows: list[Row]
    start: float
    end: float
    compressed: bool


def _attempt_title(cp: Checkpoint) -> str:
    parts = [f"#{cp.number}", cp.kind, cp.step or ""]
    if cp.attempt:
        parts.append(f"attempt {cp.attempt}")
    if cp.duration is not None:
        parts.append(fmt_duration(cp.duration))
    error = cp.detail.get("error")
    if error:
        parts.append(f"{cp.detail.get('type', 'error')}: {error}")
    return " · ".join(p for p in parts if p)


def _events_note(cp: Checkpoint) -> str:
    """Workflow steps record the event type they consumed and the types they emitted."""
    done = P.read_step_completed(cp.detail)
    consumed = done.consumed
    emitted = list(done.emitted)
    if done.stopped:  # the StopEvent is the run's output, not a delivery
        returned = done.returned
        emitted.append(returned if isinstance(returned, str) and returned else "StopEvent")
    if not consumed and not emitted:
        return ""
    out = str(consumed or "")
    if emitted:
        out += " → " + ", ".join(str(e) for e in emitted)
    return out


def build_timeline(
    run: Run,
    checkpoints: Sequence[Checkpoint],
    *,
    now: float,
    describe_event: Callable[[Checkpoint], str] = lambda cp: "",
    owners: Owners | None = None,
) -> Timeline:
    """Group checkpoints into Gantt rows and lay their bars out on one time axis; with
    ``owners``, a row marks each takeover (the silence before another owner went on)."""
    rows: list[Row] = []
    takeovers = {(t.run_id, t.seq): t for t in owners.takeovers} if owners else {}
    open_rows: dict[tuple[str, str, str], Row] = {}  # (segment, kind of row, step key)
    # A failed attempt records no start; it began, at the latest, when the previous unit
    # of work ended (or when the run was created, for the run's first one).
    first_own = bool(checkpoints) and checkpoints[0].run_id == run.run_id
    prev_end: float | None = run.created_at if first_own or not checkpoints else None

    def row_for(kind: str, cp: Checkpoint, label: str) -> Row:
        key = (cp.run_id, kind, cp.step or "")
        row = open_rows.get(key)
        if row is None:
            row = Row(label=label, kind=kind, inherited=cp.run_id != run.run_id)
            rows.append(row)
            open_rows[key] = row
        row.numbers.append(cp.number)
        return row

    for cp in checkpoints:
        taken = takeovers.get((cp.run_id, cp.seq))
        if taken is not None:
            rows.append(_takeover_row(taken))
            open_rows.clear()  # the new owner's attempts are rows of their own
        start_guess = prev_end if prev_end is not None else cp.ended_at
        kind = cp.kind
        if kind in (K.STEP_COMPLETED, K.STEP_FAILED):
            row = row_for("step", cp, cp.step or "step")
            ok = kind == K.STEP_COMPLETED
            start = cp.started_at if cp.started_at is not None else min(start_guess, cp.ended_at)
            row.spans.append(
                _Span(start, cp.ended_at, "ok" if ok else "fail", cp.number, _attempt_title(cp))
            )
            row.note = _events_note(cp) or row.note
            if ok or P.read_step_failed(cp.detail).final:
                open_rows.pop((cp.run_id, "step", cp.step or ""), None)
        elif kind == K.TIMER_STARTED:
            row = row_for("sleep", cp, f"sleep {fmt_duration(cp.detail.get('seconds'))}")
            deadline = cp.detail.get("deadline")
            row.spans.append(
                _Span(
                    cp.ended_at,
                    None,
                    "sleep",
                    cp.number,
                    f"#{cp.number} sleep until {fmt_time(deadline)}",
                )
            )
            row.note = f"until {fmt_time(deadline, date=False)}"
        elif kind == K.TIMER_FIRED:
            row = row_for("sleep", cp, "sleep")
            if row.spans and row.spans[-1].end is None:
                row.spans[-1].end = cp.ended_at
                row.spans[-1].number = cp.number
            open_rows.pop((cp.run_id, "sleep", cp.step or ""), None)
        elif kind == K.CHILD_STARTED:
            row = row_for("child", cp, f"child {cp.name or ''}")
            row.child = f"{cp.run_id}/{cp.step}"
            row.spans.append(
                _Span(cp.ended_at, None, "child", cp.number, f"#{cp.number} child run {row.child}")
            )
        elif kind == K.CHILD_COMPLETED:
            row = row_for("child", cp, f"child {cp.name or ''}")
            row.child = row.child or f"{cp.run_id}/{cp.step}"
            if row.spans and row.spans[-1].end is None:
                row.spans[-1].end = cp.ended_at
                row.spans[-1].number = cp.number
            open_rows.pop((cp.run_id, "child", cp.step or ""), None)
        elif kind == K.EVENT_RECEIVED:
            row = Row(
                label="event received",
                kind="event",
                numbers=[cp.number],
                note=describe_event(cp),
                inherited=cp.run_id != run.run_id,
            )
            row.spans.append(
                _Span(
                    cp.ended_at,
                    cp.ended_at,
                    "event",
                    cp.number,
                    f"#{cp.number} event received {row.note}",
                )
            )
            rows.append(row)
        else:  # the run's own marks: forked, completed, failed, cancelled
            label = kind.removeprefix("run.")
            note = ""
            if kind == K.RUN_FORKED:
                fork = P.read_run_forked(cp.detail)
                note = f"from {fork.source} at step {fork.at_step}"
                note += f", edited {', '.join(fork.edits)}" if fork.edits else ""
            elif kind == K.RUN_FAILED:
                note = P.read_run_failed(cp.detail).error or ""
            elif kind == K.RUN_RESUMED:
                note = resumed_text(cp.detail)
            row = Row(
                label=f"run {label}",
                kind="run",
                numbers=[cp.number],
                note=note,
                inherited=cp.run_id != run.run_id,
            )
            cls = {K.RUN_COMPLETED: "ok", K.RUN_FAILED: "fail"}.get(kind, "mark")
            row.spans.append(
                _Span(
                    cp.ended_at,
                    cp.ended_at,
                    cls,
                    cp.number,
                    f"#{cp.number} {cp.kind} {note}".strip(),
                )
            )
            rows.append(row)
        prev_end = cp.ended_at

    last = prev_end if prev_end is not None else run.created_at
    if not run.finished:
        what = {"waiting": "waiting for an event", "pending": "pending (next worker resumes it)"}
        live = Row(label=what.get(run.status, run.status), kind="live")
        if owners is not None and owners.lease_expired(now):
            expired = fmt_time(owners.lease_expires_at, date=False)
            live.note = f"lease of {owners.current} expired {expired}: next worker takes over"
        if run.wake_at is not None and run.wake_at > now:
            wake = fmt_time(run.wake_at, date=False)
            # A waiting run's wake-up time is its wait's timeout; otherwise it is asleep.
            wait = f"times out {wake}" if run.status == "waiting" else f"sleeping until {wake}"
            live.note = live.note or wait
        since = f"{run.status} since {fmt_time(last)}"
        live.spans.append(_Span(last, max(now, last), "live", None, since))
        rows.append(live)
    close_at = max(now, last) if not run.finished else last
    for row in rows:
        for span in row.spans:
            if span.end is None:
                span.end = max(close_at, span.start)
                span.cls += " open"
        row.duration = sum((s.end or s.start) - s.start for s in row.spans) or None
    return _layout(rows)


def _takeover_row(t: Takeover) -> Row:
    epoch = f"epoch {t.epoch - 1} → {t.epoch}" if t.epoch else "a new claim"
    title = (
        f"owner changed before #{t.number}: no entry from {fmt_time(t.since)} to "
        f"{fmt_time(t.resumed)} ({fmt_duration(t.wait)}: work lost with the dead owner, its "
        f"lease running out, the replay); {epoch}"
    )
    row = Row(label="owner changed", kind="takeover", numbers=[t.number], note=epoch)
    row.spans.append(_Span(t.since, t.resumed, "takeover", t.number, title))
    return row


def _layout(rows: list[Row]) -> Timeline:
    """Place bars on a 0..TRACK axis. Idle stretches that no bar covers and that are
    longer than a quarter of the busy time (a fork made a day after its source, a run
    parked for hours) are shortened to that length, so they do not squash the rest."""
    spans = [s for row in rows for s in row.spans]
    if not spans:
        return Timeline(rows, 0.0, 0.0, compressed=False)
    t0 = min(s.start for s in spans)
    t1 = max(s.end if s.end is not None else s.start for s in spans)
    merged: list[list[float]] = []
    # A takeover's silence is idle time: shortened like any other when it is long.
    busy_spans = [s for s in spans if s.cls != "takeover"]
    for s in sorted(busy_spans, key=lambda s: s.start):
        end = s.end if s.end is not None else s.start
        if merged and s.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([s.start, end])
    busy = sum(e - s for s, e in merged)
    cap = max(busy * 0.25, 1e-3)
    gaps = [(a[1], b[0]) for a, b in itertools.pairwise(merged) if b[0] - a[1] > cap]

    def shown(t: float) -> float:
        d = t - t0
        for gs, ge in gaps:
            if t >= ge:
                d -= (ge - gs) - cap
            elif t > gs:
                d -= (t - gs) * (1 - cap / (ge - gs))
        return d

    total = shown(t1) or 1.0
    for row in rows:
        for s in row.spans:
            x = shown(s.start) / total * TRACK
            w = max(shown(s.end if s.end is not None else s.start) / total * TRACK - x, MIN_BAR)
            x = min(x, TRACK - w)
            row.bars.append(Bar(round(x, 2), round(w, 2), s.cls, s.number, s.title))
    return Timeline(rows, t0, t1, compressed=bool(gaps))


def type_name(value: Any) -> str:
    """The class name of a decoded value; for a placeholder, the stored class's name."""
    if isinstance(value, Undecoded):
        return (value.type_name or value.kind).rpartition(":")[2]
    return type(value).__name__


def events_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"type": ..., **fields}`` for an event object stored in an entry payload."""
    event = values.get("event")
    out: dict[str, Any] = {"type": type_name(event) if event is not None else None}
    data = to_jsonable(event)
    if isinstance(data, dict):
        out.update(data)
    else:
        out["value"] = data
    if values.get("to") is not None:
        out["to"] = values["to"]
    return out


def waiting_for(values: Mapping[str, Any]) -> list[str]:
    """Event types a workflow run is waiting for (``ctx.wait_for_event`` keeps a
    ``@wait/...`` record holding the type in its store)."""
    return [
        str(v["type"])
        for k, v in values.items()
        if k.startswith("@wait/") and isinstance(v, dict) and v.get("type")
    ]
