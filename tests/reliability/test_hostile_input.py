"""Hostile input: ids, names, keys and payloads built to break quoting, encoding or size.

Each value is used as a run id, a step name, a state key, an argument, a step result,
a workflow event field and a store value. It must round-trip exactly, or be refused
with a typed error; either way nothing else in the file changes (a bystander run's
row, entries and snapshots, and the schema, are compared before and after) and the
file verifies. Crafted JSON payloads that look like tagged classes are refused with
``DecodeError`` and never run what they name.

Not repeated here (see the existing suites): a tampered or unsigned payload under the
signed pickle codec is refused before unpickling (tests/journal/test_codecs.py::TestPickle,
tests/journal/test_journal_bad_files.py::TestTamperedSignedPickle); the journal, -wal and
-shm files are created 0600 (tests/journal/test_journal_bad_files.py::TestFileMode).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Context,
    Engine,
    Event,
    RunIdConflict,
    StartEvent,
    StepFailed,
    StopEvent,
    Workflow,
    current_context,
    durable,
    history,
    state_at,
    step,
)
from journal import DecodeError, EntryKind, Journal, JournalError, JsonSerializer
from journal._integrity import entry_checksum

MEGABYTE = "x" * (1 << 20)
HOSTILE: dict[str, str] = {
    "quotes": 'it\'s "double" and `back` quoted',
    "nul": "a\x00b\x00",
    "sql": "'; DROP TABLE runs; --",
    "sql-like": "%_\\%' OR '1'='1",
    "1 MB": MEGABYTE,
    "hash-and-slash": "step#7/../../etc/passwd",
    "newlines": "line1\nline2\r\n\t",
    "format": "%s%d%n{0}{x}",
    "unicode": "\U0001f525\u202e\u200b\ufeffé",
    "tagged-json": '{"__t":"model","c":"os:system","v":{}}',
}
BINARY: dict[str, bytes] = {
    "non-utf8": b"\xff\xfe\x00\x80\xc3\x28\xa0\xa1",
    "nul-bytes": b"\x00" * 64,
    "1 MB random": os.urandom(1 << 20),
}
SURROGATE = "\ud800lone"
"""A str that is not valid Unicode text (no UTF-8 form)."""

OUTCOMES: dict[str, str] = {}
"""What happened to each hostile input (printed as figures for docs/reliability.md)."""


class Payload(Event):
    """A workflow event carrying a hostile text and bytes."""

    text: str
    blob: bytes


class EchoFlow(Workflow):
    """Stores the start event's text under itself as key, emits it, and returns it."""

    @step
    async def take(self, ctx: Context, ev: StartEvent) -> Payload:
        await ctx.store.set(ev.text, ev.text)
        await ctx.store.set("blob", ev.blob)
        return Payload(text=ev.text, blob=ev.blob)

    @step
    async def give(self, ctx: Context, ev: Payload) -> StopEvent:
        return StopEvent(
            result={"text": ev.text, "blob": ev.blob, "stored": await ctx.store.get(ev.text)}
        )


@step
def keep(key: str, value: Any) -> Any:
    """A step whose result and state mutation are the hostile value."""
    current_context().state[key] = value
    return value


@durable(name="reliability:echo")
def echo(ctx: Context, key: str, value: Any) -> Any:
    got = keep(key, value)
    ctx.state["after"] = "ok"
    return got


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh journal that already holds one bystander run."""
    with Engine(tmp_path / "hostile.db", lease_seconds=0) as e:
        e.call(echo, ("bystander-key", {"n": 1}), {}, run_id="bystander")
        yield e


def fingerprint(j: Journal, skip: set[str]) -> dict[str, Any]:
    """The schema, and every row of every run not in ``skip``, read with plain SQL."""
    conn = j.raw_connection()

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [r for r in conn.execute(sql).fetchall() if r[0] not in skip]

    return {
        "schema": conn.execute(
            "SELECT type, name, sql FROM sqlite_schema ORDER BY name"
        ).fetchall(),
        "runs": rows("SELECT * FROM runs ORDER BY run_id"),
        "entries": rows("SELECT * FROM entries ORDER BY run_id, seq"),
        "snapshots": rows("SELECT * FROM snapshots ORDER BY run_id, seq"),
    }


def check_untouched(j: Journal, before: dict[str, Any], new: set[str]) -> None:
    """Nothing but the runs in ``new`` changed, and the file verifies."""
    assert fingerprint(j, new) == before
    report = j.verify()
    assert report.ok, report.problems


class TestRunIds:
    """Hostile run ids round-trip through start, lookup, history and time travel."""

    @pytest.mark.parametrize("label", sorted(HOSTILE))
    def test_round_trip(self, eng: Engine, label: str) -> None:
        """The run is found by its exact id; result, state and history are its own."""
        rid = HOSTILE[label]
        before = fingerprint(eng.journal, set())
        assert eng.call(echo, ("k", rid), {}, run_id=rid) == rid
        run = eng.journal.get_run(rid)
        assert run.run_id == rid and run.status == "completed"
        assert [r.run_id for r in eng.journal.list_runs(limit=None)].count(rid) == 1
        assert eng.journal.state_at(rid).values == {"k": rid, "after": "ok"}
        assert [c.kind for c in history(rid, engine=eng)] == [
            EntryKind.STEP_COMPLETED,
            EntryKind.RUN_COMPLETED,
        ]
        assert dict(state_at(rid, step=1, engine=eng).values) == {"k": rid}
        assert eng.call(echo, ("k", rid), {}, run_id=rid) == rid  # idempotent by id and input
        with pytest.raises(RunIdConflict):
            eng.call(echo, ("k", "again"), {}, run_id=rid)  # the id names another input
        check_untouched(eng.journal, before, {rid})
        OUTCOMES[f"run id: {label}"] = "round-trips"

    def test_id_that_is_not_unicode_is_refused(self, eng: Engine) -> None:
        """A lone surrogate cannot be stored: a ValueError, and nothing is written."""
        before = fingerprint(eng.journal, set())
        with pytest.raises((ValueError, JournalError)) as info:
            eng.call(echo, ("k", 1), {}, run_id=SURROGATE)
        assert eng.journal.find_run("bystander") is not None
        check_untouched(eng.journal, before, set())
        OUTCOMES["run id: lone surrogate"] = (
            f"refused ({type(info.value).__name__}), nothing written"
        )


class TestNamesAndKeys:
    """Hostile step names and state keys are stored and read back verbatim."""

    @pytest.mark.parametrize("label", sorted(HOSTILE))
    def test_state_key(self, eng: Engine, label: str) -> None:
        """A state key made of the hostile text reads back as itself."""
        key = HOSTILE[label]
        rid = f"key-{label}"
        before = fingerprint(eng.journal, set())
        assert eng.call(echo, (key, 1), {}, run_id=rid) == 1
        assert eng.journal.state_at(rid).values == {key: 1, "after": "ok"}
        check_untouched(eng.journal, before, {rid})
        OUTCOMES[f"state key: {label}"] = "round-trips"

    @pytest.mark.parametrize("label", sorted(HOSTILE))
    def test_step_name(self, eng: Engine, label: str) -> None:
        """A step named with the hostile text is journaled and replayed under that name."""
        name = HOSTILE[label]
        rid = f"step-{label}"

        @step(name=name)
        def named(v: int) -> int:
            return v + 1

        @durable(name=f"reliability:named-{label}")
        def job() -> int:
            return named(1)

        before = fingerprint(eng.journal, set())
        assert eng.call(job, (), {}, run_id=rid) == 2
        completed = [e for e in eng.journal.read(rid) if e.kind == EntryKind.STEP_COMPLETED]
        assert [e.step for e in completed] == [f"{name}#1"]
        assert [c.name for c in history(rid, engine=eng)][:1] == [name]
        check_untouched(eng.journal, before, {rid})
        OUTCOMES[f"step name: {label}"] = "round-trips"

    def test_state_key_that_is_not_unicode_fails_the_run(self, eng: Engine) -> None:
        """A lone surrogate as a state key is a typed error, and the run ends failed."""
        with pytest.raises((JournalError, StepFailed), match="not valid Unicode"):
            eng.call(echo, (SURROGATE, 1), {}, run_id="bad-key")
        assert eng.journal.get_run("bad-key").status == "failed"


class TestPayloads:
    """Hostile text and bytes as arguments, results, state and workflow events."""

    @pytest.mark.parametrize("label", sorted(BINARY))
    def test_bytes_values(self, eng: Engine, label: str) -> None:
        """Bytes (not valid UTF-8, NULs, 1 MB) come back as the same bytes."""
        blob = BINARY[label]
        rid = f"bytes-{label}"
        before = fingerprint(eng.journal, set())
        got = eng.call(echo, ("blob", blob), {}, run_id=rid)
        assert type(got) is bytes and got == blob
        assert eng.journal.state_at(rid).values["blob"] == blob
        with Engine(eng.journal.path) as other:  # read back by another engine
            assert other.handle(rid).result(timeout=10) == blob
        check_untouched(eng.journal, before, {rid})
        OUTCOMES[f"bytes value: {label}"] = "round-trips"

    @pytest.mark.parametrize("label", sorted(HOSTILE))
    def test_workflow_event_and_store(self, eng: Engine, label: str) -> None:
        """A start event, an emitted event and a store key/value of hostile text."""
        text = HOSTILE[label]
        rid = f"flow-{label}"
        blob = BINARY["non-utf8"]
        before = fingerprint(eng.journal, set())

        async def main() -> Any:
            return await EchoFlow(engine=eng).run(run_id=rid, text=text, blob=blob)

        result = asyncio.run(main())
        assert result == {"text": text, "blob": blob, "stored": text}
        values = eng.journal.state_at(rid).values
        assert values[text] == text and values["blob"] == blob
        check_untouched(eng.journal, before, {rid})
        OUTCOMES[f"workflow event/store: {label}"] = "round-trips"


class TestCraftedJsonPayloads:
    """Payloads dressed as tagged classes are refused; nothing they name is run."""

    CRAFTED = {
        "model os:system": {"__t": "model", "c": "os:system", "v": {}},
        "dataclass subprocess:Popen": {
            "__t": "dataclass",
            "c": "subprocess:Popen",
            "v": {"args": ["touch", "PWNED"]},
        },
        "namedtuple builtins:eval": {"__t": "namedtuple", "c": "builtins:eval", "v": ["1+1"]},
        "enum builtins:exec": {"__t": "enum", "c": "builtins:exec", "v": "print(1)"},
        "model builtins:object": {"__t": "model", "c": "builtins:object", "v": {}},
        "unknown tag pickle": {"__t": "pickle", "v": "gASVAAAAAAAAAAA="},
        "nested in a list": [1, {"__t": "model", "c": "os:popen", "v": {"cmd": "id"}}],
    }

    @pytest.mark.parametrize("label", sorted(CRAFTED))
    def test_refused_and_nothing_runs(
        self, label: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """DecodeError; os.system, os.popen, Popen, eval and exec are never called."""
        called: list[str] = []
        for owner, name in [(os, "system"), (os, "popen"), (subprocess, "Popen")]:
            monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: called.append(_n))
        monkeypatch.chdir(tmp_path)
        data = json.dumps(self.CRAFTED[label]).encode()
        with pytest.raises(DecodeError, match="run 'x' seq 3"):
            JsonSerializer().decode(data, where="run 'x' seq 3")
        assert called == []
        assert not (tmp_path / "PWNED").exists()
        OUTCOMES[f"crafted JSON: {label}"] = "DecodeError, nothing executed"

    def test_crafted_entry_in_a_journal(self, tmp_path: Path) -> None:
        """A crafted entry with a valid checksum: DecodeError naming run and seq on read."""
        with Journal(tmp_path / "crafted.db") as j:
            j.create_run("victim", name="f")
            j.append("victim", [j.entry("state.set", 1, key="ok")], expected_seq=0)
            payload = json.dumps(self.CRAFTED["model os:system"]).encode()
            ts = 1.0
            checksum = entry_checksum("victim", 2, "state.set", None, "evil", payload, "json", ts)
            j.raw_connection().execute(
                "INSERT INTO entries (run_id, seq, kind, step, key, payload, codec, ts, checksum)"
                " VALUES ('victim', 2, 'state.set', NULL, 'evil', ?, 'json', ?, ?)",
                (payload, ts, checksum),
            )
            with pytest.raises(DecodeError, match=r"run 'victim' seq 2"):
                j.state_at("victim")
            assert j.state_at("victim", 1).values == {"ok": 1}

    def test_decoding_never_imports_a_module(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A payload naming a not-yet-imported module is refused without importing it."""
        module = tmp_path / "planted_side_effect.py"
        module.write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "planted_side_effect", raising=False)
        data = json.dumps({"__t": "model", "c": "planted_side_effect:Anything", "v": {}})
        with pytest.raises(DecodeError):
            JsonSerializer().decode(data.encode(), where="t")
        assert not (tmp_path / "RAN").exists(), "decoding ran the named module's code"


class TestOutcomesFigure:
    """Last in the module: the outcome of every hostile input tried, as figures."""

    def test_every_input_has_an_outcome(self) -> None:
        """Each input above recorded what happened to it (printed for docs/reliability.md)."""
        if not OUTCOMES:
            pytest.skip("run the whole module to collect the outcomes")
        for label, outcome in sorted(OUTCOMES.items()):
            print(f"FIGURE hostile {label!r}: {outcome}")
        assert all(OUTCOMES.values())
