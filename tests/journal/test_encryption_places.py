"""Encrypted values are bound to their place (run, seq, field): a value moved or swapped
into another run, seq or field of a crafted journal is refused with MisplacedPayload
naming where it was read, nothing is written and no step runs; ``durable verify`` finds
it without the key. Values written before places were bound still read (the fixture
tests/fixtures/journal_aesgcm_v1.db was written by that code: see gen_aesgcm_v1 below)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import Context, Engine, durable, fork, step
from engine.cli import cli
from journal import (
    DecodeError,
    EncryptedCodec,
    Journal,
    JsonSerializer,
    MisplacedPayload,
    Place,
    copy_journal,
)
from journal._integrity import entry_checksum, snapshot_checksum
from journal._schema import SEALED_INDEX, run_checksum
from journal.encryption import ENCRYPTION_KEYS_ENV

K1, K2 = b"1" * 32, b"2" * 32
FIXTURE = Path(__file__).parents[1] / "fixtures" / "journal_aesgcm_v1.db"
RAN: list[str] = []
"""Every execution of the step, in this process."""


def _codec(**keys: bytes) -> EncryptedCodec:
    return EncryptedCodec(JsonSerializer(), keys or {"k1": K1})


@step
def lookup(name: str) -> dict[str, str]:
    RAN.append(name)
    return {"secret": f"{name}-secret"}


def _body(ctx: Context, name: str) -> str:
    ctx.state["who"] = name
    return lookup(name)["secret"] + "/" + lookup(name + "2")["secret"]


work = durable(name="test_places:work")(_body)


def _two_runs(location: str) -> None:
    with Engine(location, codec=_codec()) as eng:
        for run_id in ("a", "b"):
            eng.start(work, (run_id,), {}, run_id=run_id).result(timeout=30)


def _entry(j: Journal, run_id: str, seq: int) -> tuple[Any, ...]:
    rows = j.backend.execute(
        "SELECT kind, step, key, payload, codec, ts FROM entries WHERE run_id = ? AND seq = ?",
        (run_id, seq),
    ).fetchall()
    return tuple(rows[0])


def _put_payload(j: Journal, run_id: str, seq: int, payload: bytes) -> None:
    """Write ``payload`` at (run, seq) as a forger would: checksum recomputed."""
    kind, step_name, key, _, codec, ts = _entry(j, run_id, seq)
    checksum = entry_checksum(run_id, seq, kind, step_name, key, payload, codec, ts)
    j.backend.execute(
        "UPDATE entries SET payload = ?, checksum = ? WHERE run_id = ? AND seq = ?",
        (payload, checksum, run_id, seq),
    )


def _swap(j: Journal, one: tuple[str, int], other: tuple[str, int]) -> None:
    first, second = bytes(_entry(j, *one)[3]), bytes(_entry(j, *other)[3])
    _put_payload(j, *one, second)
    _put_payload(j, *other, first)


def _put_run_values(j: Journal, run_id: str, **values: bytes | None) -> None:
    """Set a run's input/output as a forger would: the row's checksum recomputed."""
    db = j.backend
    row = list(db.select_run(run_id))[:-1]
    fields = list(j.get_run(run_id).__dataclass_fields__)
    for name, value in values.items():
        row[fields.index(name)] = value
        db.execute(f"UPDATE runs SET {name} = ? WHERE run_id = ?", (value, run_id))
    checksum = run_checksum([row[i] for i in SEALED_INDEX])
    db.execute("UPDATE runs SET checksum = ? WHERE run_id = ?", (checksum, run_id))


def _counts(j: Journal) -> list[Any]:
    return [
        j.query("SELECT count(*) AS n FROM runs"),
        j.query("SELECT run_id, max(seq) AS s, count(*) AS n FROM entries GROUP BY run_id"),
        j.query("SELECT count(*) AS n FROM snapshots"),
    ]


class TestMovedValues:
    """Crafted journals on both backends: every move is refused, typed, naming places."""

    @pytest.mark.parametrize(
        ("one", "other"),
        [(("a", 3), ("b", 3)), (("a", 3), ("a", 4)), (("a", 3), ("b", 4))],
        ids=["between-runs", "between-seqs", "between-runs-and-seqs"],
    )
    def test_swapped_entries_are_refused_and_nothing_runs(
        self, journal_location: str, one: tuple[str, int], other: tuple[str, int]
    ) -> None:
        _two_runs(journal_location)
        with Journal(journal_location, codec=_codec()) as j:
            _swap(j, one, other)
        RAN.clear()
        with Engine(journal_location, codec=_codec()) as eng:
            j = eng.journal
            before = _counts(j)
            with pytest.raises(MisplacedPayload) as caught:
                j.decode_entry(j.read_one(*one))
            err = caught.value
            assert (err.run_id, err.seq) == one
            assert f"run {one[0]!r} seq {one[1]}" in str(err)
            assert f"belongs to run {other[0]!r} seq {other[1]}" in str(err)
            with pytest.raises(MisplacedPayload):
                j.decode_entry(j.read_one(*other), strict=False)  # readers refuse it too
            assert _counts(j) == before, "a read wrote something"
            # A fork replaying it fails typed, its steps not run, the crafted runs untouched.
            forked = fork(one[0], at=3, engine=eng).wait(timeout=30)
            assert forked.status == "failed" and forked.error is not None
            assert forked.error.startswith(f"MisplacedPayload: run {one[0]!r} seq ")
            assert RAN == [], "a step ran over a moved value"
            for run_id in ("a", "b"):
                entries = j.query("SELECT count(*) AS n FROM entries WHERE run_id = ?", (run_id,))
                assert entries == [{"n": 5}] and j.get_run(run_id).last_seq == 5
            report = j.verify()
            assert not report.ok
            assert any(f"run {one[0]!r}" in p and "belongs to" in p for p in report.problems)

    def test_values_moved_between_fields_are_refused(self, journal_location: str) -> None:
        """Input and output swapped within a run, an entry's value as another run's
        output: found by verify without the key, refused when read with it."""
        _two_runs(journal_location)
        with Journal(journal_location, codec=_codec()) as j:
            a, b = j.get_run("a"), j.get_run("b")
            assert a.input is not None and a.output is not None
            _put_run_values(j, "a", input=a.output, output=a.input)
            _put_run_values(j, "b", output=bytes(_entry(j, "b", 3)[3]))
        with Journal(journal_location) as blind:  # no key: the places are in the clear
            problems = blind.verify().problems
        assert any(
            p.startswith("run 'a' input: this encrypted value belongs to run 'a' output")
            for p in problems
        )
        assert any("run 'b' output" in p and "belongs to run 'b' seq 3" in p for p in problems)
        with Journal(journal_location, codec=_codec()) as j:
            a = j.get_run("a")
            with pytest.raises(MisplacedPayload, match="belongs to run 'a' output"):
                j.decode(a.input, a.codec, where="input", place=Place("input", "a"))
            b = j.get_run("b")
            with pytest.raises(MisplacedPayload):
                j.decode(b.output, b.codec, where="output", place=Place("output", "b"))
            with pytest.raises(MisplacedPayload):  # its run alone is checked too
                j.decode(b.output, b.codec, where="output", run_id="a")

    def test_a_moved_result_is_refused_wherever_it_is_read(
        self, journal_location: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Run b's output copied into run a's row: a's result, a fork of a's input and
        the read tools refuse it or show it undecodable, never as a's value."""
        _two_runs(journal_location)
        with Journal(journal_location, codec=_codec()) as j:
            b = j.get_run("b")
            _put_run_values(j, "a", input=b.input, output=b.output)
            before = _counts(j)
        with Engine(journal_location, codec=_codec()) as eng:
            with pytest.raises(MisplacedPayload, match="belongs to run 'b' output"):
                eng.handle("a").result(timeout=5)
            with pytest.raises(MisplacedPayload, match="belongs to run 'b' input"):
                fork("a", at=1, engine=eng)
            assert _counts(eng.journal) == before  # the fork wrote nothing
        monkeypatch.setenv(ENCRYPTION_KEYS_ENV, f"k1={base64.b64encode(K1).decode()}")
        shown = CliRunner().invoke(cli, ["show", "a", "--json", "--db", journal_location])
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.output)
        assert "b-secret" not in shown.output
        assert "belongs to run 'b' output" in doc["output"]["undecodable"]

    def test_a_crafted_place_header_is_a_typed_error(self, journal_location: str) -> None:
        """A place nested deeper than the parser goes is a DecodeError, and verify reports
        it rather than crashing."""
        _two_runs(journal_location)
        kid = b"k1"
        crafted = (
            struct.pack("!BB", 2, len(kid)) + kid + struct.pack("!H", 60_000) + b"[" * 60_000
        ) + bytes(40)
        with pytest.raises(DecodeError, match="malformed place"):
            EncryptedCodec.placed(crafted, where="crafted")
        with Journal(journal_location) as j:
            _put_payload(j, "a", 3, crafted)
            report = j.verify()
        assert any("run 'a' seq 3" in p and "malformed place" in p for p in report.problems)

    def test_a_moved_snapshot_is_refused(self, journal_location: str) -> None:
        with Engine(journal_location, codec=_codec()) as eng:
            fn = durable(name="test_places:snap", engine=eng, snapshot_every=2)(_body)
            eng.start(fn, ("s",), {}, run_id="s").result(timeout=30)
        with Journal(journal_location, codec=_codec()) as j:
            seqs = [s.seq for s in j.snapshots("s")]
            assert len(seqs) >= 2
            lo, hi = seqs[0], seqs[-1]
            rows = {
                seq: j.backend.execute(
                    "SELECT state, fingerprint FROM snapshots WHERE run_id = ? AND seq = ?",
                    ("s", seq),
                ).fetchall()[0]
                for seq in (lo, hi)
            }
            state, fingerprint = bytes(rows[lo][0]), rows[hi][1]
            j.backend.execute(
                "UPDATE snapshots SET state = ?, checksum = ? WHERE run_id = ? AND seq = ?",
                (state, snapshot_checksum("s", hi, state, fingerprint), "s", hi),
            )
            with pytest.raises(MisplacedPayload, match=f"belongs to run 's' snapshot at seq {lo}"):
                j.state_at("s", hi)
            assert not j.verify("s").ok


def test_the_cli_verify_reports_a_moved_value_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = str(tmp_path / "j.db")
    _two_runs(location)
    with Journal(location) as j:
        _swap(j, ("a", 3), ("b", 3))
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV, raising=False)
    result = CliRunner().invoke(cli, ["verify", "--db", location])
    assert result.exit_code == 1, result.output
    assert "belongs to run 'b' seq 3" in result.output and "Traceback" not in result.output
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, f"k1={base64.b64encode(K1).decode()}")
    state = CliRunner().invoke(cli, ["history", "a", "--db", location])
    assert state.exit_code == 2, state.output
    assert "belongs to run 'b' seq 3" in state.output and "Traceback" not in state.output


def test_every_value_is_bound_and_keys_rotate(tmp_path: Path) -> None:
    """Input, output, entries and snapshots are written bound to their places; a key
    rotation keeps old values readable and binds new ones under the new key."""
    location = str(tmp_path / "j.db")
    with Engine(location, codec=_codec()) as eng:
        fn = durable(name="test_places:rot", engine=eng, snapshot_every=2)(_body)
        eng.start(fn, ("old",), {}, run_id="old").result(timeout=30)
    rotated = EncryptedCodec(JsonSerializer(), {"k1": K1, "k2": K2}, active="k2")
    with Engine(location, codec=rotated) as eng:
        fn = durable(name="test_places:rot", engine=eng, snapshot_every=2)(_body)
        eng.start(fn, ("new",), {}, run_id="new").result(timeout=30)
        j = eng.journal
        for run_id, key_id in (("old", "k1"), ("new", "k2")):
            run = j.get_run(run_id)
            for name in ("input", "output"):
                data = getattr(run, name)
                assert EncryptedCodec.placed(data) == Place(name, run_id)
                assert rotated.key_id(data) == key_id
            for e in j.read(run_id):
                if e.payload is not None:
                    assert EncryptedCodec.placed(e.payload) == Place("entry", run_id, e.seq)
            for snap in j.snapshots(run_id):
                row = j.backend.snapshot_at(run_id, snap.seq)
                assert EncryptedCodec.placed(bytes(row[0])) == Place("snapshot", run_id, snap.seq)
            assert j.decode(run.output, run.codec, where="out", place=Place("output", run_id))
        assert j.verify().ok


# -- values written before places were bound -----------------------------------------------


def test_values_written_before_places_were_bound_still_read(
    journal_location: str, tmp_path: Path
) -> None:
    """The fixture's values are format 1 (unbound); they read on both backends (the
    PostgreSQL journal is a copy), verify passes, and a fork writes bound values."""
    copy = tmp_path / "v1.db"
    shutil.copy(FIXTURE, copy)
    with Journal(str(copy), codec=_codec()) as source:
        if journal_location.startswith("postgresql"):
            with Journal(journal_location, codec=_codec()) as target:
                assert copy_journal(source, target).ok
    location = str(copy) if not journal_location.startswith("postgresql") else journal_location
    RAN.clear()
    with Engine(location, codec=_codec()) as eng:
        j = eng.journal
        a = j.get_run("a")
        assert a.codec == "aesgcm:json" and EncryptedCodec.placed(a.output) is None
        assert all(EncryptedCodec.placed(e.payload) is None for e in j.read("a") if e.payload)
        assert j.decode(a.output, a.codec, where="out", place=Place("output", "a")) == (
            "a-secret/a2-secret"
        )
        assert j.state_at("a").values == {"who": "a"}
        assert j.snapshots("a"), "the fixture has snapshots"
        assert j.verify().ok
        fn = durable(name="fixture:work", engine=eng)(_body)
        assert fn is not None
        forked = fork("a", at=1, engine=eng)
        assert forked.result(timeout=30) == "a-secret/a2-secret"
        assert RAN == ["a2"], "the fork replays seq 3 and runs the second lookup"
        new = j.get_run(forked.run_id)
        assert EncryptedCodec.placed(new.output) == Place("output", forked.run_id)
        assert j.verify().ok


def gen_aesgcm_v1(path: str) -> None:
    """How the fixture was written, by the code before places were bound (its values
    are format 1): runs "a" and "b" of ``fixture:work`` with ``snapshot_every=2`` and
    the codec ``_codec()``."""
    with Engine(path, codec=_codec()) as eng:
        fn = durable(name="fixture:work", engine=eng, snapshot_every=2)(_body)
        for run_id in ("a", "b"):
            eng.start(fn, (run_id,), {}, run_id=run_id).result(timeout=30)


# -- recovery after a crash ---------------------------------------------------------------

CRASHING = textwrap.dedent(
    """
    import json, os, signal, sys
    from engine import Context, configure, default_engine, durable, step
    from journal import EncryptedCodec, JsonSerializer

    @step
    def add(i: int) -> int:
        if i == 2 and not os.path.exists("mark"):
            open("mark", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        with open("ran", "a") as f:
            f.write(f"{i}\\n")
        return i

    @durable
    def total(ctx: Context, n: int) -> int:
        acc = 0
        for i in range(n):
            acc += add(i)
        return acc

    if __name__ == "__main__":
        configure(sys.argv[2], codec=EncryptedCodec(JsonSerializer(), {"k1": b"1" * 32}),
                  lease_seconds=1.0)
        if sys.argv[1] == "start":
            print(total.start(4, run_id="t").result(timeout=60))
        else:
            report = default_engine().recover(wait_leased=True, timeout=30)
            print(json.dumps({"resumed": report.run_ids,
                              "errors": {k: [type(v).__name__, str(v)]
                                         for k, v in report.errors.items()}}))
    """
)


def test_recovery_leaves_a_run_holding_a_moved_value_and_runs_nothing(tmp_path: Path) -> None:
    """A run killed mid-flight, two of its step results swapped (checksums recomputed):
    recovery reports MisplacedPayload naming the run and seq, claims nothing, writes
    nothing, and no step runs."""
    (tmp_path / "crashing.py").write_text(CRASHING)
    db = str(tmp_path / "j.db")

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "crashing.py", mode, db],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("start").returncode == -signal.SIGKILL
    assert (tmp_path / "ran").read_text().split() == ["0", "1"]
    with Journal(db) as j:
        steps = [e.seq for e in j.read("t") if e.kind == "step.completed"]
        assert len(steps) == 2
        _swap(j, ("t", steps[0]), ("t", steps[1]))
        before = (j.get_run("t"), [bytes(e.payload or b"") for e in j.read("t")])
    done = run("recover")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] == []
    kind, message = report["errors"]["t"]
    assert kind == "MisplacedPayload"
    assert f"run 't' seq {steps[0]}" in message and f"belongs to run 't' seq {steps[1]}" in message
    assert (tmp_path / "ran").read_text().split() == ["0", "1"], "a step ran"
    with Journal(db) as j:
        after = (j.get_run("t"), [bytes(e.payload or b"") for e in j.read("t")])
    assert after == before, "recovery wrote to the run"
