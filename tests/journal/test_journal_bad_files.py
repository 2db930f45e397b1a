"""Bad input to the journal: every failure is a precise typed error, and a file the
journal refused is left exactly as it was (same bytes, no new -wal/-shm beside it)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from journal import (
    ConflictError,
    CorruptionError,
    DecodeError,
    Journal,
    JournalError,
    NotAJournalError,
    PickleSerializer,
    RetentionPolicy,
    RunNotFound,
    SchemaVersionError,
    SerializationError,
    SignatureError,
)
from journal._integrity import entry_checksum
from journal._integrity import snapshot_checksum as _snapshot_checksum
from journal._schema import APPLICATION_ID, SCHEMA_VERSION

SIDE_FILES = ("-wal", "-shm", "-journal")


def fingerprint(path: Path) -> tuple[str, tuple[str, ...]]:
    """The file's sha256 and which SQLite side files exist next to it."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, tuple(s for s in SIDE_FILES if Path(f"{path}{s}").exists())


def counts(path: Path) -> dict[str, int]:
    """Row counts of the journal's tables, read with the stdlib driver."""
    with sqlite3.connect(path) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("runs", "entries", "snapshots")
        }


def small_journal(path: Path, runs: int = 3, entries: int = 5) -> None:
    """A closed journal with a few runs of ``state.set`` entries."""
    with Journal(path) as j:
        for r in range(runs):
            j.create_run(f"run-{r}", name="f", input={"r": r})
            for i in range(1, entries + 1):
                j.append(
                    f"run-{r}",
                    [j.entry("state.set", {"r": r, "i": i, "pad": "p" * 100}, key=f"k{i % 2}")],
                    expected_seq=i - 1,
                )


def edit_with_sqlite3(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Apply raw SQL with the stdlib driver, as an outside tool (or an attacker) would."""
    conn = sqlite3.connect(path)
    try:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def assert_refused(
    path: Path, readonly: bool, error: type[JournalError], **open_options: Any
) -> JournalError:
    """Opening ``path`` raises ``error``; the file's bytes and side files are unchanged."""
    before = fingerprint(path)
    with pytest.raises(error) as info:
        Journal(path, readonly=readonly, **open_options).close()
    after = fingerprint(path)
    assert after[0] == before[0], "the refused file's bytes changed"
    assert after[1] == before[1], f"side files {before[1]} -> {after[1]} after a refused open"
    assert str(path) in str(info.value)
    return info.value


class TestNotSqlite:
    """Files that are not SQLite at all are refused before SQLite sees them."""

    @pytest.mark.parametrize("readonly", [False, True])
    def test_random_bytes(self, tmp_path: Path, readonly: bool) -> None:
        """8 KiB of random bytes: NotAJournalError naming the path; the file is untouched."""
        path = tmp_path / "garbage.db"
        path.write_bytes(random.Random(1234).randbytes(8192))
        err = assert_refused(path, readonly, NotAJournalError)
        assert err.path == str(path)  # type: ignore[attr-defined]
        assert "not an SQLite database" in str(err)

    def test_short_text_file(self, tmp_path: Path) -> None:
        """A file shorter than the SQLite header is refused, not grown into a journal."""
        path = tmp_path / "notes.txt"
        path.write_bytes(b"SQLite")
        err = assert_refused(path, False, NotAJournalError)
        assert err.path == str(path)  # type: ignore[attr-defined]

    def test_sqlite_header_then_junk(self, tmp_path: Path) -> None:
        """The right 16-byte magic followed by junk: still NotAJournalError, never apsw's error."""
        path = tmp_path / "fake.db"
        path.write_bytes(b"SQLite format 3\x00" + random.Random(99).randbytes(8192))
        err = assert_refused(path, False, NotAJournalError)
        assert not isinstance(err, apsw.Error)


class TestEmptyFile:
    """A 0-byte file is a journal waiting to be made, not a bad file."""

    def test_empty_file_becomes_a_journal(self, tmp_path: Path) -> None:
        """Opening it creates the schema; the journal reopens with its data."""
        path = tmp_path / "empty.db"
        path.write_bytes(b"")
        with Journal(path) as j:
            j.create_run("r", name="f", input=[1, 2])
            j.append("r", [j.entry("state.set", 7, key="k")], expected_seq=0)
        with Journal(path) as j:
            assert j.get_run("r").last_seq == 1
            assert j.state_at("r").values == {"k": 7}
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


class TestTruncated:
    """A journal cut short: typed corruption errors, never a raw apsw exception."""

    def test_half_a_journal(self, tmp_path: Path) -> None:
        """Cut to half its size, -wal removed: CorruptionError or NotAJournalError."""
        path = tmp_path / "cut.db"
        small_journal(path, runs=6, entries=40)
        size = path.stat().st_size
        assert size > 8 * 4096, "the journal must span many pages for the cut to lose data"
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        for side in SIDE_FILES:
            Path(f"{path}{side}").unlink(missing_ok=True)
        before = fingerprint(path)

        def open_and_read_everything() -> None:
            with Journal(path) as j:
                for run in j.list_runs(limit=None):
                    list(j.read(run.run_id))
                    j.state_at(run.run_id)
                j.verify()

        with pytest.raises((CorruptionError, NotAJournalError)) as info:
            open_and_read_everything()
        assert str(path) in str(info.value) or "run-" in str(info.value)
        assert not isinstance(info.value, apsw.Error)
        assert fingerprint(path) == before, "the truncated file or its side files changed"

    def test_refused_open_releases_the_file(self, tmp_path: Path) -> None:
        """While the open's error is still held, no connection keeps -wal/-shm beside the file."""
        path = tmp_path / "cut.db"
        small_journal(path, runs=6, entries=40)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
        before = fingerprint(path)
        assert before[1] == ()
        with pytest.raises(CorruptionError) as info:
            Journal(path)
        assert fingerprint(path) == before, info.value


class TestCorruptPages:
    """A journal whose later pages were overwritten with junk (a bad disk, a bad copy)."""

    @pytest.fixture
    def damaged(self, tmp_path: Path) -> Path:
        """A journal that opens (page 1 intact) but whose second half is noise."""
        path = tmp_path / "damaged.db"
        small_journal(path, runs=6, entries=40)
        size = path.stat().st_size
        page = 4096
        first = size // 2 // page
        noise = random.Random(7).randbytes(size - first * page)
        with open(path, "r+b") as f:
            f.seek(first * page)
            f.write(noise)
        return path

    def test_reads_raise_corruption_error(self, damaged: Path) -> None:
        """Reading every run meets a CorruptionError (not apsw.CorruptError)."""
        with pytest.raises(CorruptionError) as info:
            with Journal(damaged) as j:
                for run in j.list_runs(limit=None):
                    list(j.read(run.run_id))
        assert not isinstance(info.value, apsw.Error)

    def test_verify_reports_instead_of_raising_apsw(self, damaged: Path) -> None:
        """verify() reports the damage (integrity_check, then each run) instead of raising."""
        with Journal(damaged) as j:
            report = j.verify()
        assert not report.ok
        assert report.problems[0].startswith("integrity_check")
        assert "malformed" in report.problems[0]
        # Which pages the noise hit decides what else is reported: the runs table
        # itself, or the entries of some runs.
        damaged_runs = [p for p in report.problems[1:] if "run-" in p or "list the runs" in p]
        assert damaged_runs, report.problems


class TestForeignSqlite:
    """An SQLite database some other program wrote is refused and left alone."""

    @staticmethod
    def make(path: Path, mode: str) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA journal_mode={mode}")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO users (name) VALUES (?)", [("ada",), ("bob",)])
        conn.commit()
        conn.close()

    @pytest.mark.parametrize(
        ("mode", "readonly"),
        [
            ("delete", False),
            ("delete", True),
            ("wal", False),
            ("wal", True),
        ],
    )
    def test_foreign_database_refused(self, tmp_path: Path, mode: str, readonly: bool) -> None:
        """A `users` database: NotAJournalError naming the path; bytes and side files unchanged."""
        path = tmp_path / "app.db"
        self.make(path, mode)
        err = assert_refused(path, readonly, NotAJournalError)
        assert "not a durable journal" in str(err)
        assert err.path == str(path)  # type: ignore[attr-defined]
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [
                ("ada",),
                ("bob",),
            ]


class TestSchemaVersion:
    """A journal from a newer schema is refused with both versions named."""

    @pytest.mark.parametrize("readonly", [False, True])
    def test_newer_schema_refused(self, tmp_path: Path, readonly: bool) -> None:
        """user_version = SCHEMA_VERSION + 1: SchemaVersionError with .found and .supported."""
        path = tmp_path / "future.db"
        small_journal(path, runs=1, entries=2)
        edit_with_sqlite3(path, (f"PRAGMA user_version={SCHEMA_VERSION + 1}", ()))
        err = assert_refused(path, readonly, SchemaVersionError)
        assert err.found == SCHEMA_VERSION + 1  # type: ignore[attr-defined]
        assert err.supported == SCHEMA_VERSION  # type: ignore[attr-defined]
        assert f"version {SCHEMA_VERSION + 1}" in str(err)

    def test_same_schema_still_opens(self, tmp_path: Path) -> None:
        """The control: the unedited journal opens (the refusal above is the version's doing)."""
        path = tmp_path / "current.db"
        small_journal(path, runs=1, entries=2)
        with Journal(path) as j:
            assert j.get_run("run-0").last_seq == 2


class TestAlteredEntry:
    """An entry whose payload changed on disk is caught by its checksum, wherever it is read."""

    @pytest.fixture
    def altered(self, tmp_path: Path) -> Path:
        """run-1's seq 3 has one payload byte flipped; its checksum column is left as it was."""
        path = tmp_path / "flipped.db"
        small_journal(path, runs=3, entries=5)
        with sqlite3.connect(path) as conn:
            (payload,) = conn.execute(
                "SELECT payload FROM entries WHERE run_id = 'run-1' AND seq = 3"
            ).fetchone()
        at = payload.index(b'"i":3') + 4
        flipped = payload[:at] + bytes([payload[at] ^ 0x01]) + payload[at + 1 :]
        assert flipped != payload and b'"i":2' in flipped  # still valid JSON: only the CRC can tell
        edit_with_sqlite3(
            path,
            ("UPDATE entries SET payload = ? WHERE run_id = 'run-1' AND seq = 3", (flipped,)),
        )
        return path

    @pytest.mark.parametrize(
        "reader",
        [
            pytest.param(lambda j: list(j.read("run-1")), id="read"),
            pytest.param(lambda j: j.read_one("run-1", 3), id="read_one"),
            pytest.param(lambda j: j.state_at("run-1"), id="state_at"),
            pytest.param(lambda j: j.state_at("run-1", 3), id="state_at_3"),
        ],
    )
    def test_reading_it_raises(self, altered: Path, reader: Callable[[Journal], Any]) -> None:
        """CorruptionError names the run and the seq."""
        with Journal(altered) as j:
            with pytest.raises(CorruptionError) as info:
                reader(j)
        assert info.value.run_id == "run-1"  # type: ignore[attr-defined]
        assert info.value.seq == 3  # type: ignore[attr-defined]
        assert "'run-1' seq 3" in str(info.value)

    def test_entries_before_it_and_other_runs_still_read(self, altered: Path) -> None:
        """Only the altered entry is refused: seqs 1-2 and the other runs verify."""
        with Journal(altered) as j:
            assert [e.seq for e in j.read("run-1", 1, 2)] == [1, 2]
            assert j.state_at("run-1", 2).values == {
                "k1": {"r": 1, "i": 1, "pad": "p" * 100},
                "k0": {"r": 1, "i": 2, "pad": "p" * 100},
            }
            assert len(list(j.read("run-0"))) == 5
            assert len(list(j.read("run-2"))) == 5

    def test_verify_names_it(self, altered: Path) -> None:
        """verify() reports exactly one problem, naming run-1 seq 3."""
        with Journal(altered) as j:
            report = j.verify()
        assert not report.ok
        assert len(report.problems) == 1, report.problems
        assert "'run-1' seq 3" in report.problems[0]
        assert "checksum" in report.problems[0]


class TestTamperedSignedPickle:
    """A signed pickle altered on disk, checksum recomputed: the HMAC refuses it unpickled."""

    KEY = b"k"

    def open(self, path: Path) -> Journal:
        return Journal(path, codec=PickleSerializer(hmac_key=self.KEY), hmac_key=self.KEY)

    def test_signature_error_and_pickle_never_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SignatureError names run and seq; pickle.loads is never called on the altered bytes."""
        path = tmp_path / "signed.db"
        with self.open(path) as j:
            j.create_run("p", name="f")
            j.append(
                "p",
                [
                    j.entry("state.set", {"secret": "AAAAAAAA"}, key="x"),
                    j.entry("state.set", {"secret": "CCCCCCCC"}, key="y"),
                ],
                expected_seq=0,
            )
        with sqlite3.connect(path) as conn:
            row = conn.execute(
                "SELECT run_id, seq, kind, step, key, payload, codec, ts FROM entries "
                "WHERE run_id = 'p' AND seq = 1"
            ).fetchone()
        run_id, seq, kind, step, key, payload, codec, ts = row
        assert codec == "pickle-hmac"
        tampered = payload.replace(b"AAAAAAAA", b"BBBBBBBB")
        assert tampered != payload
        # The tampered body is a valid pickle: without the HMAC it would load.
        assert pickle.loads(tampered[33:]) == {"secret": "BBBBBBBB"}
        checksum = entry_checksum(run_id, seq, kind, step, key, tampered, codec, ts)
        edit_with_sqlite3(
            path,
            (
                "UPDATE entries SET payload = ?, checksum = ? WHERE run_id = 'p' AND seq = 1",
                (tampered, checksum),
            ),
        )

        calls: list[bytes] = []
        real_loads = pickle.loads

        def watched_loads(data: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(bytes(data))
            if b"BBBBBBBB" in bytes(data):
                pytest.fail("pickle.loads ran on the tampered payload")
            return real_loads(data, *args, **kwargs)

        monkeypatch.setattr(pickle, "loads", watched_loads)
        with self.open(path) as j:
            entries = list(j.read("p"))  # the checksum matches: only the signature can object
            assert [e.seq for e in entries] == [1, 2]
            with pytest.raises(SignatureError) as info:
                j.decode_entry(entries[0])
            assert "run 'p' seq 1" in str(info.value)
            assert "not unpickled" in str(info.value)
            assert calls == []
            with pytest.raises(SignatureError):
                j.state_at("p")
            assert calls == []
            # The control: the untouched entry decodes through the watched pickle.loads.
            assert j.decode_entry(entries[1]) == {"secret": "CCCCCCCC"}
            assert len(calls) == 1


class TestUnknownRun:
    """Every API that names a run raises RunNotFound naming the id, and writes nothing."""

    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda j: j.get_run("ghost"), id="get_run"),
            pytest.param(lambda j: list(j.read("ghost")), id="read"),
            pytest.param(lambda j: j.read_one("ghost", 1), id="read_one"),
            pytest.param(
                lambda j: j.append("ghost", [j.entry("state.set", 1, key="k")], expected_seq=0),
                id="append",
            ),
            pytest.param(
                lambda j: j.append("ghost", [j.entry("state.set", 1, key="k")], expected_seq=None),
                id="append_unchecked",
            ),
            pytest.param(lambda j: j.state_at("ghost"), id="state_at"),
            pytest.param(lambda j: j.claim_run("ghost", "worker-1"), id="claim_run"),
            pytest.param(lambda j: j.update_run("ghost", status="failed"), id="update_run"),
        ],
    )
    def test_run_not_found(self, tmp_path: Path, call: Callable[[Journal], Any]) -> None:
        """RunNotFound (a LookupError) with .run_id == 'ghost'; row counts unchanged."""
        path = tmp_path / "j.db"
        small_journal(path, runs=1, entries=2)
        before = counts(path)
        with Journal(path) as j:
            with pytest.raises(RunNotFound) as info:
                call(j)
            assert j.find_run("ghost") is None
        assert info.value.run_id == "ghost"  # type: ignore[attr-defined]
        assert "'ghost'" in str(info.value)
        assert isinstance(info.value, LookupError)
        assert not isinstance(info.value, ConflictError)
        assert counts(path) == before


class TestUnencodable:
    """A value the codec cannot encode fails before any write, naming where it sits."""

    @pytest.mark.parametrize(
        ("call", "path"),
        [
            pytest.param(
                lambda j: j.entry("state.set", {"cart": [1, object()]}, key="basket"),
                "state['basket']['cart'][1]",
                id="entry-state",
            ),
            pytest.param(
                lambda j: j.entry("step.completed", {"ok": object()}, step="s"),
                "step.completed['ok']",
                id="entry-step",
            ),
            pytest.param(
                lambda j: j.create_run("new", name="f", input={"bad": [object()]}),
                "input['bad'][0]",
                id="create_run-input",
            ),
            pytest.param(
                lambda j: j.update_run("run-0", status="completed", output=[object()]),
                "output[0]",
                id="update_run-output",
            ),
        ],
    )
    def test_serialization_error(
        self, tmp_path: Path, call: Callable[[Journal], Any], path: str
    ) -> None:
        """SerializationError (a TypeError) with the key path and type; row counts unchanged."""
        db = tmp_path / "j.db"
        small_journal(db, runs=1, entries=2)
        before = counts(db)
        with Journal(db) as j:
            with pytest.raises(SerializationError) as info:
                call(j)
            assert j.find_run("new") is None
            run = j.get_run("run-0")
            assert (run.status, run.last_seq, run.output) == ("pending", 2, None)
        assert info.value.path == path  # type: ignore[attr-defined]
        assert info.value.type_name == "object"  # type: ignore[attr-defined]
        assert path in str(info.value)
        assert isinstance(info.value, TypeError)
        assert counts(db) == before


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0 while the test runs: file modes come from the journal, not the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


class TestFileMode:
    """The journal and its side files are private to their owner."""

    @pytest.mark.usefixtures("permissive_umask")
    def test_created_files_are_0600(self, tmp_path: Path) -> None:
        """Even under umask 0: the file, -wal and -shm are 0o600 while the journal is in use."""
        path = tmp_path / "private.db"
        with Journal(path) as j:
            j.create_run("r", name="f", input={"secret": "s"})
            j.append("r", [j.entry("state.set", 1, key="k")], expected_seq=0)
            present = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
            assert len(present) == 3, present  # WAL mode: all three exist while open
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in present}
        assert modes == {p.name: 0o600 for p in present}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


class TestCraftedCompactionRecord:
    """A horizon snapshot whose compaction record is malformed (checksum recomputed)."""

    @pytest.mark.parametrize(
        "record", ["junk", {"at": 1.0, "entries": "9", "kinds": {}}, {"at": 1.0, "entries": 9}]
    )
    def test_decode_error_names_run_and_seq_state_still_reads(
        self, tmp_path: Path, record: Any
    ) -> None:
        """Journal.compaction raises DecodeError naming run and seq; the state the snapshot
        holds still reads (the record is beside it, not in it)."""
        path = tmp_path / "crafted.db"
        small_journal(path, runs=1)
        with Journal(path) as j:
            j.update_run("run-0", status="completed")
            j.compact("run-0", RetentionPolicy(keep_snapshots=1))
            assert j.compaction("run-0") is not None
            values = j.state_at("run-0").values
        with sqlite3.connect(path) as conn:
            seq, fp = conn.execute("SELECT seq, fingerprint FROM snapshots").fetchone()
        data = json.dumps({"values": values, "pending": {}, "compacted": record}).encode()
        edit_with_sqlite3(
            path,
            (
                "UPDATE snapshots SET state = ?, checksum = ? WHERE run_id = 'run-0'",
                (data, _snapshot_checksum("run-0", seq, data, fp)),
            ),
        )
        with Journal(path) as j:
            with pytest.raises(DecodeError, match=f"run 'run-0'.* seq {seq} is malformed"):
                j.compaction("run-0")
            assert j.state_at("run-0").values == values
