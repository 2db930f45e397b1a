"""Rendering for the ``durable`` CLI and the demo: rich tables for people, plain
dicts for ``--json``.

Human output is coloured only when it goes to a terminal (rich decides, and honours
``NO_COLOR``); everything stays readable without colour. User data (run ids, keys,
values) always goes through :class:`rich.text.Text`, never through markup, so a
value such as ``"[bold]"`` prints as itself.

Journals are untrusted text: a run id, name, step key or error may hold terminal
escape sequences, control characters or bidirectional overrides. Everything human
output prints goes through :func:`clean` (they show as visible escapes such as
``\\x1b``), and every console is a :class:`SafeConsole`, which cleans what reached it
without passing through :func:`clean`. One-line fields are also cut to
:data:`MAX_SHOWN` characters, so a table's work stays linear in their length. JSON
output stays exact: :func:`json_text` writes the same value with those characters as
``\\uXXXX`` escapes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from journal import (
    DecodeError,
    EntryKind,
    Journal,
    JournalError,
    Run,
    ScheduleRecord,
    to_jsonable,
)
from journal import payloads as P

from .continuation import continued_as, continued_from
from .replay import ReplayReport
from .timetravel import NUMBERED_KINDS, Checkpoint, Diff, StateView

__all__ = [
    "MAX_SHOWN",
    "STATUS_STYLES",
    "SafeConsole",
    "Timeline",
    "checkpoint_json",
    "clean",
    "compact_json",
    "compacted_note",
    "diff_json",
    "diff_table",
    "duration",
    "failure_traceback",
    "json_text",
    "make_console",
    "plural",
    "progress",
    "replay_json",
    "replay_line",
    "run_detail",
    "run_json",
    "runs_table",
    "search_hits",
    "shown",
    "state_json",
    "status_text",
    "timestamp",
    "waits",
]

STATUS_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "waiting": "blue",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}

KIND_STYLES = {
    "step.completed": "green",
    "step.failed": "red",
    "run.completed": "bold green",
    "run.failed": "bold red",
    "run.cancelled": "yellow",
    "run.forked": "magenta",
    "run.resumed": "bold magenta",
    "timer.started": "cyan",
    "timer.fired": "cyan",
    "child.started": "blue",
    "child.completed": "blue",
    "event.received": "magenta",
}


# -- untrusted text ---------------------------------------------------------------------

# C1 controls (U+0080-U+009F: U+009B is a CSI on some terminals), DEL, and the
# bidirectional marks, embeddings, overrides and isolates (they reorder what follows).
_UNSAFE_IN_JSON = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSAFE_IN_JSON}]")
_UNSAFE_LINE = re.compile(f"[\x00-\x1f{_UNSAFE_IN_JSON}]")
_JSON_UNSAFE = re.compile(f"[{_UNSAFE_IN_JSON}]")

MAX_SHOWN = 500
"""Characters of a one-line field (run id, name, step, key, note) a table shows; the
rest is cut and counted (``--json`` prints it whole)."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, *, lines: bool = False) -> str:
    """``text`` with control characters, escape sequences and bidi overrides shown as
    visible escapes (``\\x1b``, ``\\u202e``). ``lines`` keeps newlines and tabs
    (error texts, pretty JSON); a one-line field has them escaped too."""
    pattern = _UNSAFE_LINES if lines else _UNSAFE_LINE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """A one-line field as a table shows it: cleaned, and cut to ``limit`` characters."""
    if len(text) > limit:
        return f"{clean(text[:limit])}… ({len(text)} characters)"
    return clean(text)


def json_text(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``, which escapes C0
    controls) with the other unsafe characters as ``\\uXXXX`` escapes. Outside strings
    JSON is ASCII, so this is the same document, value for value."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeConsole(Console):
    """A console that cleans every segment of text it renders (its own escape codes for
    colour are added after, and control segments pass): nothing a journal holds reaches
    the terminal as a control sequence, whichever way it was printed."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterator[Segment]:
        for segment in super().render(renderable, options):
            text, style, control = segment
            if control is None and _UNSAFE_LINES.search(text):
                yield Segment(clean(text, lines=True), style)
            else:
                yield segment


# -- consoles and progress ------------------------------------------------------------


def make_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): colour only on a terminal, and a fixed width of
    120 columns when piped (unless ``$COLUMNS`` says otherwise) so tables do not fold."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if tty or "COLUMNS" in os.environ else 120
    return SafeConsole(file=stream, width=width, highlight=False, emoji=False)


@contextmanager
def progress(description: str, *, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown only when stderr is a terminal. Yields a
    ``callback(done, total)`` (the shape of ``verify``'s and ``replay_all``'s)."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    bar = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=SafeConsole(stderr=True),
        transient=True,
    )
    task = bar.add_task(shown(description, 80), total=total)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


# -- small formatters -----------------------------------------------------------------


def timestamp(ts: float | None, *, ms: bool = False) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS`` (with milliseconds if ``ms``): ISO 8601
    with a space, as ``--since``, ``--until`` and ``--time`` take it back."""
    if ts is None:
        return ""
    when = dt.datetime.fromtimestamp(ts)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{when.microsecond // 1000:03d}" if ms else text


def clock(ts: float) -> str:
    """A Unix time as local ``HH:MM:SS.mmm``."""
    when = dt.datetime.fromtimestamp(ts)
    return f"{when:%H:%M:%S}.{when.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:  # noqa: PLR0911 - one return per unit
    """``0.4 ms``, ``152 ms``, ``1.25 s``, ``3m 04s``, ``2h 05m``."""
    if seconds is None:
        return ""
    s = max(seconds, 0.0)
    if s < 0.001:
        return f"{s * 1000:.2f} ms"
    if s < 0.01:
        return f"{s * 1000:.1f} ms"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.2f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def compact_json(value: Any, limit: int | None = None) -> str:
    """A value as one line of JSON, cut to ``limit`` characters."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=False, default=str)
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def status_text(status: str) -> Text:
    """A run status, coloured."""
    return Text(shown(status, 40), style=STATUS_STYLES.get(status, ""))


def _decoded(journal: Journal, run: Run, field: Literal["input", "output"]) -> Any:
    try:
        return to_jsonable(journal.decode_run_value(run, field, strict=False))
    except DecodeError as exc:  # e.g. a pickle whose class this process cannot import
        return {"undecodable": str(exc)}


_WAIT_PREFIX = "@wait/"  # a workflow's record of a wait_for_event (engine.workflow_run)


def waits(journal: Journal, run: Run) -> list[dict[str, Any]]:
    """What a waiting workflow run waits for: one ``{"event", "step", "deadline"}`` per
    ``wait_for_event`` still open (recorded when it started, deleted when it returned)."""
    if run.status != "waiting":
        return []
    open_waits: dict[str, dict[str, Any]] = {}
    found = journal.find_entries(
        run.run_id,
        [EntryKind.STATE_SET, EntryKind.STATE_DELETED],
        key_prefix=_WAIT_PREFIX,
        after=run.horizon,
    )
    for entry in found:
        key = entry.key or ""
        if entry.kind == EntryKind.STATE_DELETED:
            open_waits.pop(key, None)
            continue
        try:
            record = journal.decode_entry(entry)
        except (DecodeError, JournalError) as exc:
            record = {"type": f"(undecodable: {exc})"}
        record = record if isinstance(record, dict) else {}
        open_waits[key] = {
            "event": record.get("type"),
            "step": entry.step,
            "deadline": record.get("deadline"),
        }
    return list(open_waits.values())


def resumes(journal: Journal, run: Run) -> list[dict[str, Any]]:
    """The times ``run`` was resumed after a failure: each ``run.resumed`` entry's
    ``{"seq", "by", "at", "failed_seq", "error"}`` (what a journal holds, as it holds it)."""
    found = journal.find_entries(run.run_id, [EntryKind.RUN_RESUMED], after=run.horizon)
    out = []
    for entry in found:
        try:
            info = journal.decode_entry(entry)
        except (DecodeError, JournalError):
            info = {}
        d = info if isinstance(info, dict) else {}
        out.append({"seq": entry.seq, **{k: d.get(k) for k in ("by", "at", "failed_seq", "error")}})
    return out


def failure_traceback(journal: Journal, run: Run) -> str | None:
    """The traceback journaled with a failed run's ``run.failed`` entry, if any."""
    if run.status != "failed":
        return None
    found = journal.find_entries(run.run_id, [EntryKind.RUN_FAILED], after=run.horizon)
    if not found:
        return None
    try:
        info = journal.decode_entry(found[-1])
    except (DecodeError, JournalError):
        return None
    text = P.read_run_failed(info).traceback
    return text if text is not None and text.strip() else None


# -- JSON documents ---------------------------------------------------------------------


def run_json(
    run: Run, journal: Journal | None = None, *, checkpoints: int | None = None
) -> dict[str, Any]:
    """A run row as JSON; with ``journal`` its input and output decoded too."""
    doc: dict[str, Any] = {
        "run_id": run.run_id,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "codec": run.codec,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "last_seq": run.last_seq,
        "horizon": run.horizon,
        "epoch": run.epoch,
        "owner": run.owner,
        "lease_expires_at": run.lease_expires_at,
        "wake_at": run.wake_at,
        "parent_run_id": run.parent_run_id,
        "forked_from": run.forked_from,
        "forked_at": run.forked_at,
        "continued_from": continued_from(run),
        "error": run.error,
        "tags": run.tags,
    }
    if journal is not None:
        doc["continued_as"] = continued_as(journal, run)
        doc["input"] = _decoded(journal, run, "input")
        doc["output"] = _decoded(journal, run, "output")
        doc["traceback"] = failure_traceback(journal, run)
        doc["waiting_for"] = waits(journal, run)
        doc["resumed"] = resumes(journal, run)
        doc["heartbeats"] = journal.heartbeat_of(run.run_id)
    if checkpoints is not None:
        doc["checkpoints"] = checkpoints
    return doc


def checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    """One checkpoint of a history as JSON."""
    return cp.to_json()


def state_json(view: StateView) -> dict[str, Any]:
    """A state view as JSON."""
    return {
        "run_id": view.run_id,
        "seq": view.seq,
        "step": view.step,
        "values": view.to_dict(),
        "pending_events": {k: to_jsonable(v) for k, v in view.pending_events.items()},
    }


def diff_json(d: Diff) -> dict[str, Any]:
    """A diff as JSON: ``changed`` maps each path to ``{"old": ..., "new": ...}``."""
    return {
        "added": to_jsonable(d.added),
        "removed": to_jsonable(d.removed),
        "changed": {
            p: {"old": to_jsonable(a), "new": to_jsonable(b)} for p, (a, b) in d.changed.items()
        },
        "empty": d.empty,
    }


def replay_json(report: ReplayReport) -> dict[str, Any]:
    """A replay report as JSON."""
    return {
        "run_id": report.run_id,
        "name": report.name,
        "ok": report.ok,
        "calls_replayed": report.calls_replayed,
        "stopped": report.stopped,
        "divergence": to_jsonable(report.divergence),
        "error": report.error,
        "state": to_jsonable(report.state),
    }


# -- tables -----------------------------------------------------------------------------


RUNS_DROPPED = ("took", "seq", "note", "created", "name")
"""Columns of ``durable runs`` a narrow terminal drops, first to last (run id and status
always stay)."""


def runs_table(runs: list[Run], width: int | None = None) -> Table:
    """The ``durable runs`` table. Run ids are never wrapped or cut, so they can be
    copied at any width: the other columns give way to a ``width``-column terminal (the
    note is cut to fit, then whole columns are left out, in :data:`RUNS_DROPPED` order)."""
    rows: list[dict[str, Text]] = []
    for run in runs:
        note = ""
        if run.forked_from:
            note = f"fork of {shown(run.forked_from)} @seq {run.forked_at}"
        elif run.parent_run_id:
            note = f"child of {shown(run.parent_run_id)}"
        if run.error:
            first = run.error.splitlines()[0] if run.error.strip() else run.error
            note = f"{note}; {shown(first)}" if note else shown(first)
        created = timestamp(run.created_at)  # whole, so it can be pasted into --since
        took = duration(run.updated_at - run.created_at) if run.finished else ""
        rows.append(
            {
                "run id": Text(shown(run.run_id)),
                "name": Text(shown(run.name)),
                "status": status_text(run.status),
                "created": Text(created),
                "took": Text(took, justify="right"),
                "seq": Text(str(run.last_seq), justify="right"),
                "note": Text(note, style="dim" if not run.error else "red"),
            }
        )
    names = ["run id", "name", "status", "created", "took", "seq", "note"]
    natural = {n: max([len(n), *(r[n].cell_len for r in rows)]) for n in names}
    if not any(r["note"].plain for r in rows):
        names.remove("note")
    gap = 3  # one space of padding each side and the column divider

    def needed(cols: list[str], note: int) -> int:
        return sum(note if c == "note" else natural[c] for c in cols) + gap * (len(cols) - 1)

    note_width = natural["note"]
    if width is not None:
        for drop in (None, *RUNS_DROPPED):
            if drop is not None and drop in names:
                names.remove(drop)
            if "note" in names:
                note_width = min(natural["note"], width - needed(names, 0))
                if note_width >= 12:  # a cut note still says something
                    break
                continue
            if needed(names, 0) <= width:
                break
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), expand=False
    )
    for name in names:
        right = name in ("took", "seq")
        if name == "note":
            table.add_column(name, no_wrap=True, overflow="ellipsis", width=max(note_width, 4))
        elif name in ("name", "status"):
            table.add_column(name, overflow="fold")
        elif name == "run id":
            # Whole on one line whenever the terminal can hold it; an id wider than the
            # terminal folds rather than losing its end.
            fits = natural[name] if width is None else min(natural[name], width)
            table.add_column(name, overflow="fold", min_width=fits)
        else:
            table.add_column(
                name, no_wrap=True, min_width=natural[name], justify="right" if right else "left"
            )
    for row in rows:
        table.add_row(*(row[n] for n in names))
    return table


SNIPPET_MIN = 24
"""Columns the snippet of a ``search`` hit needs beside the other fields; a narrower
terminal prints each hit on two lines instead of a table."""


def search_hits(
    hits: Sequence[Mapping[str, Any]], snippets: list[Text], *, width: int
) -> RenderableType:
    """``durable search``'s matches: a table, or on a narrow terminal each hit as a line
    of its fields and its snippet indented below, so neither the run id nor the snippet
    is cut."""
    fields = [
        [
            Text(shown(h["run_id"])),
            Text(str(h["seq"]), justify="right"),
            Text(shown(h["kind"])),
            Text(shown(h["step"] or "")),
            Text(shown(h["key"] or "")),
        ]
        for h in hits
    ]
    names = ("run id", "seq", "kind", "step", "key")
    natural = [max([len(n), *(f[i].cell_len for f in fields)]) for i, n in enumerate(names)]
    if sum(natural) + 3 * len(names) + SNIPPET_MIN <= width:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for i, name in enumerate(names):
            table.add_column(
                name,
                no_wrap=True,
                min_width=natural[i],
                justify="right" if name == "seq" else "left",
            )
        table.add_column("snippet", overflow="fold")
        for row, snippet in zip(fields, snippets, strict=True):
            table.add_row(*row, snippet)
        return table
    lines = Text()
    for row, snippet in zip(fields, snippets, strict=True):
        run_id, seq, kind, step, key = row
        head = Text.assemble(run_id, "  seq ", seq.plain, "  ", kind)
        for extra in (step, key):
            if extra.plain:
                head.append("  ")
                head.append_text(extra)
        lines.append_text(head)
        lines.append("\n    ")
        lines.append_text(snippet)
        lines.append("\n")
    return lines


def run_detail(run: Run, journal: Journal, *, checkpoints: int, now: float) -> list[RenderableType]:
    """The ``durable show`` view: a field grid, then the decoded input and output/error."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(label: str, value: str | Text) -> None:
        grid.add_row(label, value if isinstance(value, Text) else Text(clean(value)))

    row("run", run.run_id)
    row("name", run.name)
    row("kind", run.kind)
    row("status", status_text(run.status))
    row("created", timestamp(run.created_at, ms=True))
    row("updated", timestamp(run.updated_at, ms=True))
    row("took", duration(run.updated_at - run.created_at) if run.finished else "(still going)")
    lease = "none"
    if run.owner:
        left = (run.lease_expires_at or 0) - now
        state = f"expires in {duration(left)}" if left > 0 else f"expired {duration(-left)} ago"
        lease = f"held by {run.owner} ({state})"
    row("epoch", str(run.epoch))
    row("lease", lease)
    if run.wake_at is not None:
        row("wakes", timestamp(run.wake_at, ms=True))
    if run.parent_run_id:
        row("parent", run.parent_run_id)
    if run.forked_from:
        row("forked from", f"{run.forked_from} at seq {run.forked_at}")
    if (prev := continued_from(run)) is not None:
        row("continues", f"{prev} (continue_as_new)")
    if (nxt := continued_as(journal, run)) is not None:
        row("continued as", nxt)
    row("last seq", str(run.last_seq))
    row("horizon", f"{run.horizon}" + (" (entries up to it were compacted)" if run.horizon else ""))
    row("checkpoints", str(checkpoints))
    for resumed in resumes(journal, run):
        at = resumed["at"]
        when = timestamp(at, ms=True) if isinstance(at, int | float) else "?"
        row(
            "resumed",
            f"at seq {resumed['seq']} by {resumed['by']}, {when}, after the failure at seq "
            f"{resumed['failed_seq']}: {resumed['error']}",
        )
    row("codec", run.codec)
    out: list[RenderableType] = [grid]
    out.append(Text("\ninput", style="bold"))
    out.append(Text(clean(pretty_json(_decoded(journal, run, "input")), lines=True)))
    if run.status == "completed":
        out.append(Text("\noutput", style="bold"))
        output = pretty_json(_decoded(journal, run, "output"))
        out.append(Text(clean(output, lines=True)))
    for wait in waits(journal, run):
        if not any(isinstance(o, Text) and o.plain == "\nwaiting for" for o in out):
            out.append(Text("\nwaiting for", style="bold"))
        deadline = wait["deadline"]
        line = f"{wait['event'] or 'an event'} (step {wait['step'] or '?'})"
        if isinstance(deadline, int | float):
            line += f", until {timestamp(deadline, ms=True)}"
        out.append(Text(clean(line)))
    beats = journal.heartbeat_of(run.run_id)
    if beats:
        out.append(Text("\nheartbeats", style="bold"))
        for key, beat in beats.items():
            ago = f" ({duration(now - beat['at'])} ago)" if now >= beat["at"] else ""
            line = (
                f"{key}  {timestamp(beat['at'], ms=True)}{ago}  {compact_json(beat.get('details'))}"
            )
            out.append(Text(clean(line)))
    if run.error:
        out.append(Text("\nerror", style="bold red"))
        out.append(Text(clean(run.error, lines=True), style="red"))
    trace = failure_traceback(journal, run)
    if trace is not None:
        out.append(Text("\ntraceback", style="bold red"))
        out.append(Text(clean(trace.rstrip("\n"), lines=True), style="red"))
    return out


def pretty_json(value: Any) -> str:
    """A JSON-ready value, indented (as :func:`json_text`: exact, and safe to print)."""
    return json_text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def diff_table(d: Diff, *, before: str = "old", after: str = "new") -> Table:
    """``+ path value`` / ``- path value`` / ``~ path old → new``, one row per path."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("path", no_wrap=True)
    table.add_column(f"{before} → {after}", overflow="fold")
    rows: list[tuple[str, str, Text]] = []
    for path, value in d.added.items():
        rows.append((path, "+", Text(json_text(compact_json(value)), style="green")))
    for path, value in d.removed.items():
        rows.append((path, "-", Text(json_text(compact_json(value)), style="red")))
    for path, (old, new) in d.changed.items():
        rows.append(
            (
                path,
                "~",
                Text.assemble(
                    (json_text(compact_json(old)), "red"),
                    " → ",
                    (json_text(compact_json(new)), "green"),
                ),
            )
        )
    for path, mark, text in sorted(rows, key=lambda r: r[0]):
        style = {"+": "green", "-": "red", "~": "yellow"}[mark]
        table.add_row(Text(mark, style=style), Text(shown(path)), text)
    return table


def replay_line(report: ReplayReport) -> Text:
    """One line per replayed run: ``ok`` or ``DIVERGED`` and why."""
    if report.ok:
        return Text.assemble(
            ("ok       ", "green"),
            shown(report.run_id),
            f"  {shown(report.name)}  ({report.calls_replayed} calls replayed,"
            f" {clean(str(report.stopped))})",
        )
    out = Text.assemble(("DIVERGED ", "bold red"), shown(report.run_id), f"  {shown(report.name)}")
    out.append(f"\n         {clean(str(report.error), lines=True)}", style="red")
    return out


# -- the history timeline -----------------------------------------------------------------


def compacted_note(journal: Journal, lineage: Mapping[str, Run]) -> Text | None:
    """For ``history``: which runs of a lineage were compacted, up to which seq, how many
    steps that dropped and when; ``None`` if none was."""
    notes = []
    for run in lineage.values():
        if not run.horizon:
            continue
        record = journal.compaction(run.run_id)
        if record is not None:
            numbered = sum(n for kind, n in record.kinds.items() if kind in NUMBERED_KINDS)
            steps = record.kinds.get(EntryKind.STEP_COMPLETED, 0)
            notes.append(
                f"{plural(numbered, 'checkpoint')} ({plural(steps, 'completed step')},"
                f" {plural(record.entries, 'entry', 'entries')} up to seq {run.horizon}) of"
                f" {shown(run.run_id)} were compacted on {timestamp(record.at)}"
            )
            continue
        taken = next((s.created_at for s in journal.snapshots(run.run_id) if s.seq == run.horizon),
                     None)  # fmt: skip
        when = f" (state kept from a snapshot of {timestamp(taken)})" if taken else ""
        notes.append(f"entries up to seq {run.horizon} of {shown(run.run_id)} were compacted{when}")
    if not notes:
        return None
    return Text(
        "; ".join(notes) + ": their checkpoints are not listed, and the numbers below count"
        " from there (`state --seq` still reads the run after it)",
        style="dim",
    )


def resumed_text(detail: Any) -> str:
    """What a ``run.resumed`` entry's payload says, in words (read from an untrusted
    journal: any shape is shown as best it can be, never raised on)."""
    d = detail if isinstance(detail, dict) else {}
    reopens = d.get("reopens")
    items: list[Any] = reopens if isinstance(reopens, list) else []
    steps = [str(r.get("step")) for r in items if isinstance(r, dict)]
    text = f"resumed by {d.get('by')} after the failure at seq {d.get('failed_seq')}"
    return text + (f"; runs {', '.join(steps)} again" if steps else "")


def _details(cp: Checkpoint) -> Text:
    parts: list[str] = []
    d = cp.detail
    if cp.kind == "run.forked":
        fork = P.read_run_forked(d)
        parts.append(f"forked from {fork.source} at step {fork.at_step}")
        if fork.edits:
            parts.append(f"edited {', '.join(fork.edits)}")
    if cp.kind == "run.resumed":
        parts.append(resumed_text(d))
    if cp.kind in ("step.failed", "run.failed") and d.get("error") is not None:
        final = (
            "" if cp.kind == "run.failed" else (" (final)" if d.get("final") else " (will retry)")
        )
        parts.append(f"{d.get('type', 'error')}: {d.get('error')}{final}")
    if cp.body_set_keys:
        parts.append("body set " + ", ".join(cp.body_set_keys))
    if cp.body_deleted_keys:
        parts.append("body deleted " + ", ".join(cp.body_deleted_keys))
    if cp.set_keys and cp.kind != "run.forked":  # a fork's edits are listed above
        parts.append("set " + ", ".join(cp.set_keys))
    if cp.deleted_keys:
        parts.append("deleted " + ", ".join(cp.deleted_keys))
    # A workflow step's completion names the event types it took and emitted.
    emitted = d.get("emitted") if isinstance(d.get("emitted"), list) else None
    if emitted:
        parts.append("emitted " + ", ".join(str(e) for e in emitted))
    elif cp.emitted:
        parts.append(plural(len(cp.emitted), "event") + " emitted")
    consumed = d.get("consumed") if isinstance(d.get("consumed"), str) else None
    if consumed:
        parts.append(f"consumed {consumed}")
    elif cp.consumed:
        parts.append(plural(len(cp.consumed), "event") + " consumed")
    style = "red" if cp.kind.endswith("failed") else ""
    return Text(clean("; ".join(parts)), style=style)


class Timeline:
    """``durable history``: a run's checkpoints as a table, printed in chunks so a run
    of any length streams. Every chunk uses the first chunk's column widths, so the
    chunks line up as one table. The bar places each step within its run's lifetime."""

    HEADERS = ("#", "seq", "kind", "step", "try", "started", "duration", "timeline", "details")

    def __init__(self, console: Console, run: Run, spans: Mapping[str, Run], *, chunk: int = 200):
        self.console = console
        self.run = run
        self.spans = dict(spans)
        self.chunk = chunk
        self.rows: list[Checkpoint] = []
        self.widths: dict[str, int] | None = None
        self.count = 0
        self.steps = 0
        self.step_time = 0.0
        self.failures = 0
        # The bar takes what a narrow terminal can spare after the other columns.
        # Narrow terminals drop the bar, then the start time, to leave room for details.
        spare = console.width - 110
        self.bar = min(20, spare) if spare >= 8 else 0
        self.headers = [
            h
            for h in self.HEADERS
            if (h != "timeline" or self.bar) and (h != "started" or console.width >= 100)
        ]
        utf8 = (console.encoding or "").lower().replace("-", "").startswith("utf")
        self.fill, self.tick = ("█", "▏") if utf8 else ("#", "|")

    def add(self, cp: Checkpoint) -> None:
        """Buffer one checkpoint; print a chunk when enough are buffered."""
        self.rows.append(cp)
        self.count += 1
        if cp.kind == "step.completed":
            self.steps += 1
        if cp.kind.endswith("failed"):
            self.failures += 1
        if cp.duration is not None and cp.run_id == self.run.run_id:
            self.step_time += cp.duration
        if len(self.rows) >= self.chunk:
            self.flush()

    def close(self) -> None:
        """Print what is buffered and a one-line summary."""
        self.flush()
        if self.count == 0:
            if self.run.horizon:
                self.console.print(Text("(no checkpoints after the compacted entries)"))
            else:
                self.console.print(Text("(no checkpoints: the run has not completed a step yet)"))
            return
        span = self.run.updated_at - self.run.created_at
        self.console.print(
            Text(
                f"{plural(self.count, 'checkpoint')}, {plural(self.steps, 'step')} completed, "
                f"{plural(self.failures, 'failure')};"
                f" {duration(self.step_time)} in steps over {duration(span)}; run is "
            )
            + status_text(self.run.status)
        )

    def _bar(self, cp: Checkpoint) -> str:
        seg = self.spans.get(cp.run_id, self.run)
        t0, t1 = seg.created_at, max(seg.updated_at, cp.ended_at)
        span = t1 - t0
        if span <= 0:
            return ""
        start = cp.started_at if cp.started_at is not None else cp.ended_at
        a = min(max((start - t0) / span, 0.0), 1.0)
        b = min(max((cp.ended_at - t0) / span, 0.0), 1.0)
        lo = min(int(a * self.bar), self.bar - 1)
        hi = min(round(b * self.bar), self.bar)
        if cp.started_at is None or hi <= lo:
            return " " * lo + self.tick
        return " " * lo + self.fill * (hi - lo)

    def _cells(self, cp: Checkpoint) -> dict[str, Text]:
        kind = Text(shown(cp.kind, 40), style=KIND_STYLES.get(cp.kind, ""))
        number = Text(str(cp.number))
        if cp.run_id != self.run.run_id:
            number.append("*", style="dim")  # inherited from the run this one forked from
        seg = self.spans.get(cp.run_id, self.run)
        same_day = dt.date.fromtimestamp(seg.created_at) == dt.date.fromtimestamp(cp.ended_at)
        start = cp.started_at if cp.started_at is not None else cp.ended_at
        when = clock(start) if same_day else timestamp(start, ms=True)
        return {
            "#": number,
            "seq": Text(str(cp.seq)),
            "kind": kind,
            "step": Text(shown(cp.step or "")),
            "try": Text("" if cp.attempt is None else str(cp.attempt)),
            "started": Text(when),
            "duration": Text(duration(cp.duration)),
            "timeline": Text(self._bar(cp) if self.bar else "", style=KIND_STYLES.get(cp.kind, "")),
            "details": _details(cp),
        }

    def flush(self) -> None:
        """Print the buffered checkpoints as one chunk of the table."""
        if not self.rows:
            return
        cells = [self._cells(cp) for cp in self.rows]
        first = self.widths is None
        if self.widths is None:
            digits = len(
                str(max(self.run.last_seq, 1) + sum(r.last_seq for r in self.spans.values()))
            )
            self.widths = {
                "#": digits + (1 if len(self.spans) > 1 else 0),
                "seq": max(digits, 3),
                "kind": max(15, *(c["kind"].cell_len for c in cells)),
                "step": max(4, *(c["step"].cell_len for c in cells)),
                "try": 3,
                "started": max(12, *(c["started"].cell_len for c in cells)),
                "duration": 9,
                "timeline": self.bar,
            }
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_header=first, show_edge=False)
        for name in self.headers:
            width = self.widths.get(name)
            justify: JustifyMethod = "right" if name in ("#", "seq", "try", "duration") else "left"
            if width is None:
                table.add_column(name, overflow="fold")
            else:
                table.add_column(
                    name, width=width, no_wrap=True, overflow="ellipsis", justify=justify
                )
        for row in cells:
            table.add_row(*(row[name] for name in self.headers))
        self.console.print(table)
        self.rows = []


def schedule_json(record: ScheduleRecord) -> dict[str, Any]:
    """A stored schedule as JSON (its input left encoded: it is the runs' input)."""
    return {
        "name": record.name,
        "target": record.target,
        "cron": record.cron,
        "timezone": record.timezone,
        "missed": record.missed,
        "queue": record.queue,
        "tags": record.tags,
        "origin": record.origin,
        "paused": record.paused,
        "next_at": record.next_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def schedules_table(records: list[ScheduleRecord], *, now: float) -> Table:
    """The ``durable schedules`` table: the next tick in the schedule's own time zone."""
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("name", "function", "cron", "time zone", "missed", "state", "next tick"):
        table.add_column(name)
    for record in records:
        if record.paused:
            state, next_tick = Text("paused", style="yellow"), Text("")
        else:
            state = Text("active", style="green")
            next_tick = Text("none" if record.next_at is None else _next_tick(record, now))
        table.add_row(
            Text(shown(record.name)),
            Text(shown(record.target)),
            Text(shown(record.cron)),
            Text(shown(record.timezone)),
            Text(record.missed),
            state,
            next_tick,
        )
    return table


def _next_tick(record: ScheduleRecord, now: float) -> str:
    assert record.next_at is not None
    try:
        zone: dt.tzinfo = ZoneInfo(record.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc
    when = dt.datetime.fromtimestamp(record.next_at, zone).isoformat(timespec="seconds")
    left = record.next_at - now
    return f"{when} ({'due now' if left <= 0 else 'in ' + duration(left)})"
