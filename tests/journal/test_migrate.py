"""copy_journal: a journal copied between files and PostgreSQL, verified, resumable."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journal import (
    ConnectionLost,
    EntryKind,
    Journal,
    MigrationError,
    PickleSerializer,
    RetentionPolicy,
    SnapshotPolicy,
    copy_journal,
    migrate,
)

K = EntryKind
KEY = b"migration test key"
READ_ENTRIES = migrate._entry_batches


# -- a source journal with runs of every kind ---------------------------------------------


def steps(j: Journal, run_id: str, n: int, *, start: int) -> int:
    """Append ``n`` entries (state sets, events, values) after seq ``start``."""
    seq = start
    for i in range(n):
        entries = [
            j.entry(K.STEP_COMPLETED, {"result": i, "attempt": 1}, step=f"s#{i}", key="h"),
            j.entry(K.STATE_SET, {"i": i, "tags": ["a", i]}, key=f"k{i % 4}"),
        ]
        if i % 5 == 0:
            entries.append(j.entry(K.EVENT_RECEIVED, {"to": None, "event": i}, key=f"ev{i}"))
        if i % 5 == 1:
            entries.append(j.entry(K.EVENT_CONSUMED, key=f"ev{i - 1}"))
        seq = j.append(run_id, entries, expected_seq=seq)
    return seq


def build(path: Path) -> None:
    """Ten runs of several kinds in a journal file."""
    with Journal(path, snapshots=SnapshotPolicy(every=10)) as j:
        started = [j.entry(K.RUN_STARTED, {"owner": "h:1"})]
        j.create_run("done", name="m:done", input={"x": 1}, entries=started, meta={"who": "me"})
        seq = steps(j, "done", 12, start=1)
        j.append(
            "done",
            [j.entry(K.RUN_COMPLETED)],
            expected_seq=seq,
            status="completed",
            output=j.encode({"total": 3}),
        )

        j.create_run("bad", name="m:bad", input=None, entries=started)
        j.append(
            "bad",
            [j.entry(K.RUN_FAILED, {"type": "ValueError", "error": "no"})],
            expected_seq=1,
            status="failed",
            error="ValueError: no",
        )

        j.create_run(
            "live",
            name="m:live",
            entries=started,
            owner="h:2",
            lease_seconds=600,
            code_version="v7",
            snapshot_every=4,
        )
        j.claim_run("live", "h:3", lease_seconds=900, steal=True)  # epoch 2
        steps(j, "live", 6, start=1)

        j.create_run("asleep", name="m:sleep", status="waiting", wake_at=time.time() + 3600)
        j.create_run("queued", name="m:q", queue="emails", priority=5)

        j.create_run(
            "fork",
            name="m:done",
            forked_from="done",
            forked_at=9,
            entries=[j.entry(K.RUN_FORKED, {"from": "done", "at_seq": 9})],
        )
        steps(j, "fork", 3, start=1)
        j.create_run("fork2", name="m:done", forked_from="fork", forked_at=2)
        j.create_run("child", name="m:child", parent_run_id="fork2", entries=started)

        j.create_run("old", name="m:old", entries=started)
        seq = steps(j, "old", 30, start=1)
        j.append("old", [j.entry(K.RUN_COMPLETED)], expected_seq=seq, status="completed")
        report = j.compact("old", RetentionPolicy(keep_snapshots=1))
        assert report.horizons["old"] > 0

    with Journal(
        path, codec=PickleSerializer(hmac_key=KEY), hmac_key=KEY, snapshots=SnapshotPolicy(every=3)
    ) as j:
        j.create_run("signed", name="m:pickled", input={1, 2, 3}, entries=started)
        steps(j, "signed", 4, start=1)


@pytest.fixture(scope="module")
def source_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("migrate") / "source.db"
    build(path)
    return path


@pytest.fixture
def source(source_file: Path) -> Iterator[Journal]:
    j = Journal(source_file, readonly=True, hmac_key=KEY)
    yield j
    j.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty target: a new journal file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "target.db")
    return str(request.getfixturevalue("pg_schema_url"))


# -- comparing two journals ------------------------------------------------------------------


def contents(j: Journal) -> dict[str, Any]:
    """Everything a journal holds, as read through its API (decoded states included)."""
    out: dict[str, Any] = {}
    for run in j.list_runs(limit=None):
        rid = run.run_id
        snapshot_rows = j.backend.execute(
            "SELECT seq, state, codec, fingerprint, checksum, created_at FROM snapshots"
            " WHERE run_id = ? AND seq >= ? ORDER BY seq",
            (rid, run.horizon),
        ).fetchall()
        out[rid] = {
            "run": run,
            "entries": list(j.read(rid, run.horizon + 1)),
            "snapshots": [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in snapshot_rows
            ],
            "states": [j.state_at(rid, s) for s in range(run.horizon, run.last_seq + 1)],
        }
    return out


def same(a: Journal, b: Journal) -> None:
    ca, cb = contents(a), contents(b)
    assert list(ca) == list(cb)
    for rid in ca:
        assert ca[rid] == cb[rid], rid


# -- the tests ---------------------------------------------------------------------------


class TestRoundTrip:
    """Everything arrives unchanged, on every pair of backends."""

    @pytest.mark.postgres
    def test_file_to_postgres_and_back(
        self, source: Journal, pg_schema_url: str, tmp_path: Path
    ) -> None:
        """SQLite → PostgreSQL → SQLite: rows, entries, snapshots and states equal."""
        with Journal(pg_schema_url, hmac_key=KEY) as pg:
            report = copy_journal(source, pg)
            assert report.ok, report.problems
            assert report.runs == report.runs_copied == report.runs_verified == 10
            assert report.entries_copied == report.entries_verified > 60
            assert report.snapshots_copied == report.snapshots_verified > 5
            same(source, pg)
            assert pg.get_run("live").epoch == 2 and pg.get_run("live").owner == "h:3"
            assert pg.get_run("old").horizon > 0
            assert pg.state_at("signed").values["k3"] == {"i": 3, "tags": ["a", 3]}
            assert pg.decode(pg.get_run("signed").input, "pickle-hmac", where="t") == {1, 2, 3}
            assert pg.verify().ok
            with Journal(tmp_path / "back.db", hmac_key=KEY) as back:
                assert copy_journal(pg, back).ok
                same(source, back)
                assert back.verify().ok

    def test_file_to_file(self, source: Journal, tmp_path: Path) -> None:
        with Journal(tmp_path / "copy.db", hmac_key=KEY) as copy:
            report = copy_journal(source, copy)
            assert report.ok and report.runs_copied == 10
            same(source, copy)
            # The copy is a working journal: its runs go on where they were.
            live = copy.get_run("live")
            copy.append(
                "live",
                [copy.entry(K.STATE_SET, 1, key="z")],
                expected_seq=live.last_seq,
                epoch=live.epoch,
            )

    def test_named_runs_bring_what_they_refer_to(self, source: Journal, tmp_path: Path) -> None:
        """A child of a fork of a fork needs its parent and both fork sources."""
        with Journal(tmp_path / "some.db") as copy:
            report = copy_journal(source, copy, run_ids=["child"])
            assert report.ok
            assert [r.run_id for r in copy.list_runs()] == ["done", "fork", "fork2", "child"]
            assert copy.state_at("fork2").values == source.state_at("fork2").values
            with pytest.raises(MigrationError, match="no run 'nope' in the source"):
                copy_journal(source, copy, run_ids=["nope"])

    def test_progress_and_same_journal(
        self, source: Journal, source_file: Path, tmp_path: Path
    ) -> None:
        seen: list[tuple[str, int, int]] = []
        with Journal(tmp_path / "copy.db") as copy:
            report = copy_journal(source, copy, progress=lambda *a: seen.append(a))
        phases = [p for p, _, _ in seen]
        assert phases.index("verify") > phases.index("copy") and set(phases) == {"copy", "verify"}
        copied = [d for p, d, _ in seen if p == "copy"]
        assert copied == sorted(copied) and copied[-1] == seen[-1][2] == report.entries_copied
        with Journal(source_file) as again, pytest.raises(MigrationError, match="same journal"):
            copy_journal(source, again)


class TestRefusals:
    """Bad sources are reported, conflicting targets refused; nothing copied silently."""

    def test_tampered_entry_is_reported_not_copied(self, tmp_path: Path) -> None:
        path = tmp_path / "tampered.db"
        with Journal(path) as j:
            j.create_run("a", name="m", entries=[j.entry(K.STATE_SET, "fine", key="k")])
            j.create_run("b", name="m", entries=[j.entry(K.STATE_SET, "secret", key="k")])
            j.create_run("b-fork", name="m", forked_from="b", forked_at=1)
            j.raw_connection().execute(
                "UPDATE entries SET payload = ? WHERE run_id = 'b' AND seq = 1", (b'"Secret"',)
            )
        with Journal(path, readonly=True) as src, Journal(tmp_path / "t.db") as dst:
            report = copy_journal(src, dst)
            assert not report.ok and report.runs_copied == 1
            assert set(report.not_copied) == {"b", "b-fork"}
            assert "seq 1: checksum mismatch in the source" in report.not_copied["b"]
            assert "refers to run 'b'" in report.not_copied["b-fork"]
            assert [r.run_id for r in dst.list_runs()] == ["a"]
            assert dst.backend.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
            assert any("'b'" in p and "checksum" in p for p in report.problems)

    def test_conflicting_run_writes_nothing(self, source: Journal, target_location: str) -> None:
        with Journal(target_location) as dst:
            dst.create_run("fork", name="another function", input=[1])
            with pytest.raises(MigrationError, match=r"already holds 1 run.*'fork'.*name") as info:
                copy_journal(source, dst)
            assert info.value.context["run_ids"] == ["fork"]
            assert [r.run_id for r in dst.list_runs()] == ["fork"]
            assert dst.backend.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
            # The runs it would not have touched can still be copied alone.
            assert copy_journal(source, dst, run_ids=["bad"]).ok


def interrupt_after(batches: int) -> Callable[..., Iterator[list[Any]]]:
    """An entry reader that fails like a dropped connection after ``batches`` batches."""
    count = {"n": 0}

    def reader(*args: Any) -> Iterator[list[Any]]:
        for batch in READ_ENTRIES(*args):
            count["n"] += 1
            if count["n"] > batches:
                raise ConnectionLost("connection lost (test)")
            yield batch

    return reader


class TestResume:
    """An interrupted copy leaves whole runs only; running it again finishes it."""

    def test_interrupted_copy_resumes(
        self, source: Journal, target_location: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(migrate, "BATCH", 7)
        # The first run copied ("done", 32 entries: 5 batches) dies inside its copy.
        monkeypatch.setattr(migrate, "_entry_batches", interrupt_after(3))
        with Journal(target_location, hmac_key=KEY) as dst:
            with pytest.raises(ConnectionLost):
                copy_journal(source, dst)
            assert dst.find_run("done") is None, "a half-copied run was committed"
            assert dst.backend.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
            monkeypatch.setattr(migrate, "_entry_batches", interrupt_after(9))
            with pytest.raises(ConnectionLost):
                copy_journal(source, dst)
            partial = [r.run_id for r in dst.list_runs()]
            assert partial and "done" in partial and len(partial) < 10
            for rid in partial:  # each run there is whole
                h = source.get_run(rid).horizon
                assert list(dst.read(rid, h + 1)) == list(source.read(rid, h + 1))
            monkeypatch.undo()
            report = copy_journal(source, dst)
            assert report.ok, report.problems
            assert report.runs_skipped == len(partial)
            assert report.runs_copied == 10 - len(partial)
            same(source, dst)
            again = copy_journal(source, dst)
            assert again.ok and again.runs_skipped == 10 and again.runs_copied == 0

    def test_run_written_during_the_copy_is_copied_again(self, tmp_path: Path) -> None:
        """A worker appending mid-copy: the run is copied again, as it is after."""
        path = tmp_path / "busy.db"
        with Journal(path) as j:
            j.create_run("busy", name="m", entries=[j.entry(K.STATE_SET, 0, key="n")])
            steps(j, "busy", 5, start=1)
        with Journal(path) as src, Journal(tmp_path / "t.db") as dst:
            appended: list[int] = []

            def progress(phase: str, done: int, total: int) -> None:
                if phase == "copy" and not appended:
                    last = src.get_run("busy").last_seq
                    appended.append(
                        src.append("busy", [src.entry(K.STATE_SET, 9, key="n")], expected_seq=last)
                    )

            report = copy_journal(src, dst, progress=progress)
            assert report.ok, report.problems
            assert dst.get_run("busy").last_seq == appended[0] == src.get_run("busy").last_seq
            assert dst.state_at("busy").values["n"] == 9
