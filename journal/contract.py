"""The journal contract: tests every journal backend must pass.

Subclass :class:`JournalContract` in a test module and implement
``open_journal(tmp_path, **options)``; pytest then runs the whole suite against
that backend through the :class:`~journal.Journal` facade. :class:`RecorderContract`
(``open_recorder(tmp_path)``) tests the backend's recorder operations below it.
Needs the ``test`` extra (pytest).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ._backend import CommitUnknown
from ._recorder import Recorder
from ._schema import RUN_FIELDS, SCHEDULE_FIELDS, SEALED_FIELDS, run_checksum
from .errors import (
    ConflictError,
    HorizonError,
    JournalError,
    LeaseHeld,
    RunNotFound,
    SeqOutOfRange,
    SerializationError,
)
from .kinds import EntryKind
from .policies import RetentionPolicy, SnapshotPolicy
from .records import NewEntry
from .store import AppendRequest, Journal

__all__ = ["JournalContract", "RecorderContract"]

K = EntryKind


def _set(j: Journal, key: str, value: Any) -> Any:
    return j.entry(K.STATE_SET, value, key=key)


class JournalContract:
    """The shared suite. Subclasses provide :meth:`open_journal`."""

    def open_journal(self, tmp_path: Path, **options: Any) -> Journal:
        """Open a fresh journal of the backend under test."""
        raise NotImplementedError

    @pytest.fixture
    def j(self, tmp_path: Path) -> Any:
        journal = self.open_journal(tmp_path)
        yield journal
        journal.close()

    # -- runs --------------------------------------------------------------------------

    def test_create_run_is_idempotent_by_run_id(self, j: Journal) -> None:
        """Creating an existing run id returns that run and writes nothing new."""
        _, created = j.create_run("r1", name="mod:fn", input={"x": 1})
        again, created_again = j.create_run("r1", name="other:fn", input={"x": 2})
        assert created and not created_again
        assert again.run_id == "r1" and again.name == "mod:fn"
        assert j.decode(again.input, again.codec, where="t") == {"x": 1}
        assert len(j.list_runs()) == 1

    def test_generated_run_ids_are_unique(self, j: Journal) -> None:
        """Without a run id, each create makes a new run."""
        a, _ = j.create_run(name="f")
        b, _ = j.create_run(name="f")
        assert a.run_id != b.run_id

    def test_create_run_with_entries_commits_them_at_seq_1(self, j: Journal) -> None:
        """Initial entries land from seq 1 in the same transaction as the run."""
        run, _ = j.create_run("r", name="f", entries=[j.entry(K.RUN_STARTED, {"a": 1})])
        assert run.last_seq == 1
        assert [e.kind for e in j.read("r")] == [K.RUN_STARTED]

    def test_get_unknown_run_raises_run_not_found(self, j: Journal) -> None:
        """An unknown run id is a typed error naming the id."""
        with pytest.raises(RunNotFound, match="nope"):
            j.get_run("nope")
        assert j.find_run("nope") is None

    def test_list_runs_filters_and_pages(self, j: Journal) -> None:
        """Status, name, time range and paging filters combine."""
        for i in range(6):
            j.create_run(f"r{i}", name="a" if i % 2 else "b", status="pending")
        j.update_run("r1", status="completed")
        assert [r.run_id for r in j.list_runs(name="a")] == ["r1", "r3", "r5"]
        assert [r.run_id for r in j.list_runs(status="completed")] == ["r1"]
        assert [r.run_id for r in j.list_runs(status=["pending"], name="a")] == ["r3", "r5"]
        assert [r.run_id for r in j.list_runs(limit=2, offset=2)] == ["r2", "r3"]
        assert [r.run_id for r in j.list_runs(limit=1, newest_first=True)] == ["r5"]
        mid = j.get_run("r3").created_at
        assert {r.run_id for r in j.list_runs(created_after=mid)} >= {"r3", "r4", "r5"}
        assert "r5" not in {r.run_id for r in j.list_runs(created_before=mid)}
        with pytest.raises(ValueError, match="unknown status"):
            j.list_runs(status="nonsense")

    def test_update_run_sets_status_output_error(self, j: Journal) -> None:
        """Output is encoded with the run's codec; error and status are stored."""
        j.create_run("r", name="f")
        run = j.update_run("r", status="failed", output=[1, 2], error="boom")
        assert (run.status, run.error) == ("failed", "boom")
        assert j.decode(run.output, run.codec, where="t") == [1, 2]
        assert run.finished

    # -- leases and epochs -------------------------------------------------------------

    def test_claim_raises_epoch_and_blocks_other_owners(self, j: Journal) -> None:
        """A claim raises the epoch; another owner is refused until the lease expires."""
        j.create_run("r", name="f")
        a = j.claim_run("r", "worker-a", lease_seconds=60)
        assert (a.owner, a.epoch, a.status) == ("worker-a", 1, "running")
        with pytest.raises(LeaseHeld, match="worker-a"):
            j.claim_run("r", "worker-b", lease_seconds=60)
        b = j.claim_run("r", "worker-b", lease_seconds=60, steal=True)
        assert (b.owner, b.epoch) == ("worker-b", 2)

    def test_expired_lease_is_claimable(self, j: Journal) -> None:
        """A run whose lease expired is listed as claimable and can be taken over."""
        j.create_run("r", name="f")
        j.claim_run("r", "a", lease_seconds=-1)
        assert [r.run_id for r in j.claimable()] == ["r"]
        assert j.claim_run("r", "b").owner == "b"
        assert j.claimable() == []

    def test_leases_are_measured_by_the_journal_clock(self, j: Journal) -> None:
        """Every lease written (creation with an owner, claim, takeover, renewal) runs
        from :meth:`Journal.clock`'s now, read as it is written."""
        lease = 60.0

        def granted(write: Callable[[], float | None]) -> None:
            before = j.clock()
            expires = write()
            after = j.clock()
            assert expires is not None and before + lease <= expires <= after + lease

        granted(lambda: j.create_run("r", name="f", owner="a", lease_seconds=lease)[0]
                .lease_expires_at)  # fmt: skip
        granted(lambda: j.claim_run("r", "a", lease_seconds=lease).lease_expires_at)
        granted(lambda: j.claim_run("r", "b", lease_seconds=lease, steal=True).lease_expires_at)
        granted(lambda: j.renew_lease("r", "b", 3, lease))
        j.create_run("q", name="f")
        granted(lambda: j.claim_next("c", lease_seconds=lease)[0].lease_expires_at)
        assert abs(j.clock() - time.time()) < 60  # this host's clock is right here

    def test_stale_epoch_is_fenced_off(self, j: Journal) -> None:
        """A writer whose lease was taken over gets ConflictError and writes nothing."""
        j.create_run("r", name="f")
        old = j.claim_run("r", "a", lease_seconds=-1)
        j.claim_run("r", "b")
        with pytest.raises(ConflictError, match="fenced"):
            j.append("r", [_set(j, "k", 1)], expected_seq=0, epoch=old.epoch)
        with pytest.raises(ConflictError):
            j.renew_lease("r", "a", old.epoch, 30)
        assert j.get_run("r").last_seq == 0
        assert list(j.read("r")) == []

    def test_leases_renewed_together_report_the_lost_ones(self, j: Journal) -> None:
        """``renew_leases`` extends every lease still held in one commit and names the
        others (taken over, ended, another owner's) without failing the rest."""
        for run_id in ("held", "taken", "ended", "other"):
            j.create_run(run_id, name="f")
        held = j.claim_run("held", "a", lease_seconds=5)
        taken = j.claim_run("taken", "a", lease_seconds=-1)
        j.claim_run("taken", "b")
        ended = j.claim_run("ended", "a", lease_seconds=5)
        j.append("ended", [], expected_seq=None, status="completed")
        other = j.claim_run("other", "b", lease_seconds=5)
        leases = {"held": held.epoch, "taken": taken.epoch, "ended": ended.epoch,
                  "other": other.epoch}  # fmt: skip
        before = j.clock()
        assert sorted(j.renew_leases("a", leases, 60)) == ["ended", "other", "taken"]
        assert (j.get_run("held").lease_expires_at or 0) >= before + 60
        assert (j.get_run("other").lease_expires_at or 0) < before + 60  # b's untouched
        assert j.renew_leases("a", {}, 60) == []

    def test_get_runs_reads_many_by_id(self, j: Journal) -> None:
        """Existing runs by id, past one read's worth of ids; unknown ids are left out."""
        ids = [f"r{i}" for i in range(1203)]
        for run_id in ids:
            j.create_run(run_id, name="f")
        found = j.get_runs([*ids, "nosuch", "r0"])
        assert sorted(found) == sorted(ids)
        assert found["r7"] == j.get_run("r7")

    def test_finished_run_cannot_be_claimed(self, j: Journal) -> None:
        """Claiming a completed run is a conflict."""
        j.create_run("r", name="f", status="completed")
        with pytest.raises(ConflictError, match="completed"):
            j.claim_run("r", "a")

    def test_waiting_run_is_claimable_when_due(self, j: Journal) -> None:
        """A waiting run with a wake time in the past is claimable; one in the future is not."""
        j.create_run("soon", name="f", status="waiting", wake_at=time.time() - 1)
        j.create_run("later", name="f", status="waiting", wake_at=time.time() + 3600)
        j.create_run("parked", name="f", status="waiting")
        assert [r.run_id for r in j.claimable()] == ["soon"]

    # -- entries -----------------------------------------------------------------------

    def test_append_is_dense_and_checked_against_expected_seq(self, j: Journal) -> None:
        """Seqs are dense from 1; a stale expected seq conflicts and writes nothing."""
        j.create_run("r", name="f")
        assert j.append("r", [_set(j, "a", 1), _set(j, "b", 2)], expected_seq=0) == 2
        with pytest.raises(ConflictError, match="expected last seq 0 but it is 2"):
            j.append("r", [_set(j, "c", 3)], expected_seq=0)
        assert j.append("r", [_set(j, "c", 3)], expected_seq=2) == 3
        assert [(e.seq, e.key) for e in j.read("r")] == [(1, "a"), (2, "b"), (3, "c")]
        assert j.get_run("r").last_seq == 3

    def test_append_to_unknown_run(self, j: Journal) -> None:
        """Appending to a run that does not exist is RunNotFound."""
        with pytest.raises(RunNotFound):
            j.append("ghost", [_set(j, "a", 1)], expected_seq=0)

    def test_append_updates_run_in_same_commit(self, j: Journal) -> None:
        """Status and output change in the commit that appends the final entry."""
        j.create_run("r", name="f")
        out = j.encode({"done": True})
        j.append("r", [j.entry(K.RUN_COMPLETED)], expected_seq=0, status="completed", output=out)
        run = j.get_run("r")
        assert run.status == "completed" and run.last_seq == 1
        assert j.decode(run.output, run.codec, where="t") == {"done": True}

    def test_read_ranges_and_last_entry(self, j: Journal) -> None:
        """Reads return inclusive seq ranges; last_entry is the newest."""
        j.create_run("r", name="f")
        j.append("r", [_set(j, str(i), i) for i in range(10)], expected_seq=0)
        assert [e.seq for e in j.read("r", 4, 6)] == [4, 5, 6]
        assert [e.seq for e in j.read("r", 9)] == [9, 10]
        last = j.last_entry("r")
        assert last is not None and last.seq == 10 and j.decode_entry(last) == 9
        with pytest.raises(SeqOutOfRange):
            j.read_one("r", 11)

    def test_batch_append_isolates_conflicts(self, j: Journal) -> None:
        """A group commit applies the good requests and reports the conflicting one."""
        j.create_run("a", name="f")
        j.create_run("b", name="f")
        results = j.append_batch(
            [
                AppendRequest("a", [_set(j, "x", 1)], 0),
                AppendRequest("b", [_set(j, "x", 1)], 5),
                AppendRequest("a", [_set(j, "y", 2)], 1),
            ]
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ConflictError)
        assert j.get_run("b").last_seq == 0 and j.get_run("a").last_seq == 2

    def test_batch_isolates_a_value_it_cannot_bind(self, j: Journal) -> None:
        """An encrypted value the journal cannot read to bind to its place fails its own
        request with a typed error; the rest of the group commit lands."""
        j.create_run("a", name="f")
        j.create_run("b", name="f")
        bad = replace(_set(j, "x", 1), codec="aesgcm:json", payload=b"\x09not sealed")
        results = j.append_batch(
            [
                AppendRequest("a", [_set(j, "x", 1)], 0),
                AppendRequest("b", [bad], 0),
                AppendRequest("a", [_set(j, "y", 2)], 1),
            ]
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], JournalError), results[1]
        assert j.get_run("b").last_seq == 0 and j.get_run("a").last_seq == 2

    def test_batch_creates_runs_beside_appends(self, j: Journal) -> None:
        """Creations in a batch: new runs with their first entries, an existing id
        returned as it is, a missing parent reported; the appends alongside apply."""
        j.create_run("old", name="f", input=1)
        results = j.append_batch(
            [
                AppendRequest("old", [_set(j, "x", 1)], 0),
                j.new_run("new", name="g", input=2, entries=[_set(j, "k", "v")], owner="w"),
                j.new_run("old", name="other", input=3),
                j.new_run("orphan", name="g", parent_run_id="nobody"),
            ]
        )
        assert results[0] == 1
        new, created = results[1]
        assert created and (new.run_id, new.last_seq, new.epoch, new.owner) == ("new", 1, 1, "w")
        assert j.get_run("new") == new
        assert j.state_at("new").values == {"k": "v"}
        old, created_old = results[2]
        assert not created_old and old.name == "f"
        assert old.last_seq == 0  # creations apply first: read before the append
        assert isinstance(results[3], RunNotFound) and j.find_run("orphan") is None

    def test_unencodable_value_fails_before_any_write(self, j: Journal) -> None:
        """SerializationError names the key path; the journal is unchanged."""
        j.create_run("r", name="f")
        with pytest.raises(SerializationError) as info:
            j.entry(K.STATE_SET, {"cart": [1, object()]}, key="basket")
        assert "basket" in str(info.value) and "object" in str(info.value)
        with pytest.raises(SerializationError):
            j.create_run("r2", name="f", input={"bad": object()})
        assert j.find_run("r2") is None and j.get_run("r").last_seq == 0

    # -- state and snapshots -----------------------------------------------------------

    def test_state_at_folds_sets_deletes_and_events(self, j: Journal) -> None:
        """state_at(seq) is the fold of entries up to seq."""
        j.create_run("r", name="f")
        j.append(
            "r",
            [
                _set(j, "a", 1),
                j.entry(K.EVENT_EMITTED, {"ev": 1}, key="e1"),
                _set(j, "b", [1, 2]),
                j.entry(K.STATE_DELETED, key="a"),
                j.entry(K.EVENT_CONSUMED, key="e1"),
            ],
            expected_seq=0,
        )
        assert j.state_at("r", 0).values == {}
        s2 = j.state_at("r", 2)
        assert s2.values == {"a": 1} and s2.pending == {"e1": {"ev": 1}}
        s5 = j.state_at("r")
        assert s5.values == {"b": [1, 2]} and s5.pending == {} and s5.seq == 5
        with pytest.raises(SeqOutOfRange):
            j.state_at("r", 6)

    def test_snapshots_follow_the_policy_and_bound_reads(self, tmp_path: Path) -> None:
        """A snapshot is written every N entries; state_at reads only the tail after it."""
        j = self.open_journal(tmp_path, snapshots=SnapshotPolicy(every=10))
        try:
            j.create_run("r", name="f")
            for i in range(35):
                j.append("r", [_set(j, f"k{i % 7}", i)], expected_seq=i)
            assert [s.seq for s in j.snapshots("r")] == [10, 20, 30]
            before = j.entries_read
            state = j.state_at("r", 34)
            assert j.entries_read - before == 4
            assert state.values == {f"k{i % 7}": i for i in range(34)}
        finally:
            j.close()

    def test_per_run_snapshot_interval(self, j: Journal) -> None:
        """A run's own snapshot_every overrides the journal's policy."""
        j.create_run("r", name="f", snapshot_every=3)
        for i in range(7):
            j.append("r", [_set(j, "k", i)], expected_seq=i)
        assert [s.seq for s in j.snapshots("r")] == [3, 6]

    def test_stale_snapshot_fingerprint_is_skipped(self, j: Journal) -> None:
        """A snapshot made under another fold version is ignored, not trusted."""
        j.create_run("r", name="f")
        j.append("r", [_set(j, "a", 1), _set(j, "a", 2)], expected_seq=0)
        j.write_snapshot("r", 2)
        with j.lock, j.backend.transaction("test"):
            j.backend.execute("UPDATE snapshots SET fingerprint = 'fold-v0/json'")
        assert j.state_at("r", 2).values == {"a": 2}

    # -- compaction --------------------------------------------------------------------

    def test_compaction_keeps_last_snapshots_and_refuses_older_reads(self, tmp_path: Path) -> None:
        """After compaction, reads before the horizon raise HorizonError naming it."""
        j = self.open_journal(tmp_path, snapshots=SnapshotPolicy(every=10))
        try:
            j.create_run("r", name="f")
            for i in range(45):
                j.append("r", [_set(j, f"k{i % 5}", i)], expected_seq=i)
            expected = {s: j.state_at("r", s).values for s in range(20, 46)}
            report = j.compact("r", RetentionPolicy(keep_snapshots=3, include_active=True))
            assert report.horizons == {"r": 20} and report.entries_deleted == 20
            assert j.get_run("r").horizon == 20
            with pytest.raises(HorizonError, match="horizon"):
                j.state_at("r", 19)
            with pytest.raises(HorizonError, match="seq 20"):
                list(j.read("r", 5))
            assert {s: j.state_at("r", s).values for s in range(20, 46)} == expected
            assert j.verify().ok
        finally:
            j.close()

    def test_compaction_leaves_active_runs_by_default(self, tmp_path: Path) -> None:
        """Unfinished runs are not compacted unless the policy includes them."""
        j = self.open_journal(tmp_path, snapshots=SnapshotPolicy(every=5))
        try:
            j.create_run("r", name="f", status="running")
            j.append("r", [_set(j, "k", i) for i in range(12)], expected_seq=0)
            assert j.compact().entries_deleted == 0
        finally:
            j.close()

    def test_compacting_a_finished_run_keeps_its_final_state(self, j: Journal) -> None:
        """A finished run compacts down to a snapshot of its final state."""
        j.create_run("r", name="f")
        j.append("r", [_set(j, "k", i) for i in range(30)], expected_seq=0, status="completed")
        report = j.compact(policy=RetentionPolicy(batch_size=7))
        assert report.entries_deleted == 30
        assert j.state_at("r").values == {"k": 29}
        assert j.query("SELECT count(*) AS n FROM entries") == [{"n": 0}]

    def test_keep_seconds_retains_recent_entries(self, tmp_path: Path) -> None:
        """Entries newer than keep_seconds stay readable after compaction."""
        j = self.open_journal(tmp_path, snapshots=SnapshotPolicy(every=5))
        try:
            j.create_run("r", name="f")
            j.append("r", [_set(j, "k", i) for i in range(20)], expected_seq=0, status="completed")
            j.compact(policy=RetentionPolicy(keep_seconds=3600))
            assert len(list(j.read("r"))) == 20
        finally:
            j.close()

    # -- read side ---------------------------------------------------------------------

    def test_export_json_and_csv(self, j: Journal) -> None:
        """Exports hold the run, decoded payloads and snapshots."""
        j.create_run("r", name="f", input={"n": 1})
        j.append("r", [_set(j, "a", {"deep": [1]})], expected_seq=0)
        data = json.loads(j.export_run("r"))
        assert data["run"]["run_id"] == "r" and data["run"]["input"] == {"n": 1}
        assert data["entries"][0]["payload"] == {"deep": [1]}
        csv_text = j.export_run("r", format="csv")
        assert csv_text.splitlines()[0] == "seq,kind,step,key,codec,ts,payload"
        assert '"{""deep"": [1]}"' in csv_text

    def test_query_is_read_only(self, j: Journal) -> None:
        """Ad-hoc queries see the data and cannot write."""
        j.create_run("r", name="f")
        assert j.query("SELECT run_id FROM runs") == [{"run_id": "r"}]
        j.create_run("s%", name="f")
        assert j.query(  # a literal % and a ? parameter, in either spelling of SQL
            "SELECT run_id FROM runs WHERE run_id LIKE ? || '%' ORDER BY run_id", ("s",)
        ) == [{"run_id": "s%"}]
        with pytest.raises(JournalError, match=r"readonly|read-only|query failed"):
            j.query("DELETE FROM runs")
        assert j.find_run("r") is not None

    def test_verify_passes_on_a_sound_journal(self, j: Journal) -> None:
        """verify() finds nothing wrong with a journal written through the API."""
        j.create_run("r", name="f", snapshot_every=4)
        j.append("r", [_set(j, "k", i) for i in range(10)], expected_seq=0)
        report = j.verify()
        assert report.ok, report.problems
        assert report.entries == 10 and report.snapshots == 1

    # -- time-travel queries -----------------------------------------------------------

    def test_time_travel_queries(self, j: Journal) -> None:
        """Checkpoints are counted and located by kind up to a seq; a time finds the seq
        written by then; forks and function names are listed."""
        j.create_run("r", name="mod:f")
        done = j.entry(K.STEP_COMPLETED, 1, step="s#1")
        seq = j.append("r", [_set(j, "a", 1), done, _set(j, "b", 2), done], expected_seq=0)
        kinds = [K.STEP_COMPLETED]
        assert j.count_checkpoints("r", seq, kinds) == 2
        assert j.count_checkpoints("r", 2, kinds) == 1
        assert [j.locate_checkpoint("r", seq, kinds, n) for n in (1, 2, 3)] == [2, 4, None]
        assert j.last_seq_marked("r", K.STEP_COMPLETED, "nope") == 4
        assert j.last_seq_marked("r", K.RUN_FORKED, "s#1") == 4
        assert j.last_seq_marked("r", K.RUN_FORKED, "nope") == 0
        ts = j.read_one("r", 4).ts
        assert j.seq_at_time("r", ts) == 4 and j.seq_at_time("r", ts - 3600) is None
        j.create_run("f2", name="mod:g", forked_from="r", forked_at=2)
        j.create_run("f1", name="mod:f", forked_from="r", forked_at=4)
        assert j.forks_of("r") == ["f2", "f1"] and j.forks_of("f1") == []
        assert j.function_names() == ["mod:f", "mod:g"]

    # -- the read side ---------------------------------------------------------------

    def test_list_and_count_runs_by_text(self, j: Journal) -> None:
        """Runs are found by text in their id or name (any case, ``%``/``_`` literal),
        and counted by status or queue under the same filters."""
        j.create_run("Order-1", name="shop:checkout", status="completed")
        j.create_run("order_2", name="shop:refund", queue="mail", tags={"team": "a"})
        j.create_run("x%y", name="misc:Order", queue="mail")
        j.create_run("z", name="misc:other", queue="bulk", status="running")

        def ids(**filters: Any) -> list[str]:
            return [r.run_id for r in j.list_runs(limit=None, **filters)]

        assert ids(contains="ORDER") == ["Order-1", "order_2", "x%y"]
        assert ids(contains="_") == ["order_2"] and ids(contains="%") == ["x%y"]
        assert ids(contains=["order", "refund"]) == ["order_2"]
        assert ids(id_contains="order") == ["Order-1", "order_2"]
        assert ids(name_contains="order") == ["x%y"]
        assert ids(contains="order", status="pending", tags={"team": "a"}) == ["order_2"]
        assert ids(contains="nothing") == []
        assert j.count_runs() == {"completed": 1, "pending": 2, "running": 1}
        assert j.count_runs(contains="order") == {"completed": 1, "pending": 2}
        assert j.count_runs("queue") == {"bulk": 1, "mail": 2}
        assert j.count_runs("queue", status="pending") == {"mail": 2}
        assert j.count_runs("queue", name_contains="nothing") == {}
        with pytest.raises(ValueError, match=r"by 'status' or 'queue'"):
            j.count_runs("name")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown status"):
            j.count_runs(status="lost")

    def test_find_entries_by_kind_and_key(self, j: Journal) -> None:
        """Entries are found by kind, key and key prefix (compared as written) above a
        seq, across runs, verified."""
        j.create_run("r", name="f")
        j.create_run("s", name="f")
        j.append(
            "r",
            [
                _set(j, "@wait/a", 1),
                _set(j, "@waitXa", 2),
                j.entry(K.STATE_DELETED, key="@wait/a"),
                _set(j, "k_1", 3),
                j.entry(K.STEP_COMPLETED, 4, step="s#1"),
            ],
            expected_seq=0,
        )
        j.append("s", [_set(j, "k_1", 5), _set(j, "k%1", 6)], expected_seq=0)
        both = [K.STATE_SET, K.STATE_DELETED]

        def found(*args: Any, **kwargs: Any) -> list[tuple[str, int]]:
            return [(e.run_id, e.seq) for e in j.find_entries(*args, **kwargs)]

        assert found("r", both, key_prefix="@wait/") == [("r", 1), ("r", 3)]
        assert found("r", both, key_prefix="@wait/", after=1) == [("r", 3)]
        assert found(["s", "r"], [K.STATE_SET], keys=["k_1"]) == [("r", 4), ("s", 1)]
        assert found(["s", "r"], [K.STATE_SET], key_prefix="k%") == [("s", 2)]
        assert found("r", [K.STEP_COMPLETED]) == [("r", 5)]
        assert found("r", both, keys=[]) == [] and found([], both) == []
        entry = j.find_entries("r", [K.STEP_COMPLETED])[0]
        assert entry == j.read_one("r", 5) and j.decode_entry(entry) == 4

    def test_size_grows_with_the_journal(self, j: Journal) -> None:
        """``size()`` measures what the journal takes on disk."""
        before = j.size()
        assert before > 0
        j.create_run("r", name="f")
        j.append("r", [_set(j, f"k{i}", os.urandom(4096).hex()) for i in range(64)], expected_seq=0)
        assert j.size() >= before + 64 * 4096

    def test_search_payloads(self, j: Journal) -> None:
        """Full-text search finds inputs, entries and a compacted run's snapshot values,
        best first, whole words, limited, in one run if asked."""
        from .search import MATCH_END, MATCH_START, search_payloads  # noqa: PLC0415

        j.create_run("r", name="f", input={"fruit": "banana"})
        j.append("r", [_set(j, "k", "a banana split"), _set(j, "n", "none")], expected_seq=0)
        j.create_run("c", name="f", snapshot_every=2)
        j.append("c", [_set(j, "old", "banana bread"), _set(j, "x", 1)], expected_seq=0)
        j.append("c", [_set(j, "y", 2), _set(j, "z", 3)], expected_seq=2)
        j.compact("c", RetentionPolicy(keep_snapshots=1, include_active=True))
        assert j.get_run("c").horizon == 4
        hits = search_payloads(j, "banana")
        assert {(h["run_id"], h["kind"], h["key"]) for h in hits} == {
            ("r", "run.input", None),
            ("r", K.STATE_SET, "k"),
            ("c", "snapshot", "old"),
        }
        assert f"{MATCH_START}banana{MATCH_END}" in hits[0]["snippet"]
        assert [h["seq"] for h in search_payloads(j, "split", run_id="r")] == [1]
        assert search_payloads(j, "banana", run_id="c", limit=5)[0]["kind"] == "snapshot"
        assert len(search_payloads(j, "banana", limit=1)) == 1
        assert search_payloads(j, "bananas") == []
        with pytest.raises(ValueError, match="empty"):
            search_payloads(j, "  ")
        with pytest.raises(RunNotFound):
            search_payloads(j, "banana", run_id="nope")

    # -- writes whose COMMIT raised ----------------------------------------------------

    @staticmethod
    def _commit_then_fail(j: Journal, *, lands: bool) -> Callable[[], None]:
        """Make the next COMMIT raise as if its outcome were unknown, having applied
        (``lands``) or rolled back the transaction; returns the undo."""
        db = j.backend
        real = db.commit

        def commit(where: str) -> None:
            del db.commit  # once
            if lands:
                real(where)
            else:
                db.rollback()
            raise CommitUnknown(f"{where}: injected", where=where)

        db.commit = commit  # type: ignore[method-assign]
        return lambda: db.__dict__.pop("commit", None)

    @pytest.mark.parametrize("lands", [True, False])
    def test_claim_next_whose_commit_raised_is_resolved(self, j: Journal, lands: bool) -> None:
        """A claim whose COMMIT raised returns what landed, never the private error."""
        j.create_run("r", name="f")
        self._commit_then_fail(j, lands=lands)
        claimed = j.claim_next("w", lease_seconds=60)
        assert [r.run_id for r in claimed] == (["r"] if lands else [])
        run = j.get_run("r")
        assert (run.owner, run.epoch) == (("w", 1) if lands else (None, 0))

    @pytest.mark.parametrize("lands", [True, False])
    def test_renew_lease_whose_commit_raised_is_resolved(self, j: Journal, lands: bool) -> None:
        """A renewal whose COMMIT raised returns the new expiry if it landed, else is a
        ConflictError (a JournalError), never the private error."""
        j.create_run("r", name="f")
        run = j.claim_run("r", "w", lease_seconds=5)
        self._commit_then_fail(j, lands=lands)
        if lands:
            expires = j.renew_lease("r", "w", run.epoch, 60)
            assert j.get_run("r").lease_expires_at == expires
        else:
            with pytest.raises(ConflictError):
                j.renew_lease("r", "w", run.epoch, 60)
            assert j.get_run("r").lease_expires_at == run.lease_expires_at

    @pytest.mark.parametrize("lands", [True, False])
    def test_write_snapshot_whose_commit_raised_is_resolved(self, j: Journal, lands: bool) -> None:
        """A snapshot whose COMMIT raised is returned if it landed, else a JournalError."""
        j.create_run("r", name="f", entries=[_set(j, "a", 1), _set(j, "b", 2)])
        self._commit_then_fail(j, lands=lands)
        if lands:
            info = j.write_snapshot("r")
            assert info in j.snapshots("r") and info.seq == 2
        else:
            with pytest.raises(JournalError) as caught:
                j.write_snapshot("r")
            assert not isinstance(caught.value, CommitUnknown)
            assert j.snapshots("r") == []

    # -- snapshots from the state the writer holds -------------------------------------

    def test_snapshots_fold_what_the_writer_holds(self, tmp_path: Path) -> None:
        """Once a run has a snapshot, later snapshots are built from the state the
        journal holds (no entry read back), and each equals a fold from scratch."""
        j = self.open_journal(tmp_path, snapshots=SnapshotPolicy(every=3, by_size=False))
        try:
            j.create_run("r", name="f")
            seq = 0
            for i in range(4):  # up to the first snapshot (which may read the run once)
                seq = j.append("r", [_set(j, f"k{i}", i)], expected_seq=seq)
            read = j.entries_read
            for i in range(4, 20):
                seq = j.append("r", [_set(j, f"k{i % 6}", [i])], expected_seq=seq)
            seq = j.append("r", [_set(j, "x", 1), _set(j, "y", 2)], expected_seq=seq)
            assert j.entries_read == read
            snaps = [s.seq for s in j.snapshots("r")]
            assert snaps == [3, 6, 9, 12, 15, 18, 22]
            assert j.verify("r").ok  # every snapshot equals the fold of its entries
            # seq 19 is the append of i = 18: every key k0..k5 was last set by it or before
            assert j.state_at("r", 19).values == {f"k{i % 6}": [i] for i in range(4, 19)}
        finally:
            j.close()

    def test_a_failed_append_does_not_leave_its_state_held(self, tmp_path: Path) -> None:
        """An append refused by its guard, or by another writer's append, leaves no
        trace in the next snapshot."""
        path = tmp_path
        j = self.open_journal(path, snapshots=SnapshotPolicy(every=2, by_size=False))
        other = self.open_journal(path, snapshots=SnapshotPolicy(every=2, by_size=False))
        try:
            j.create_run("r", name="f")
            seq = j.append("r", [_set(j, "a", 1), _set(j, "b", 1)], expected_seq=0)
            with pytest.raises(ConflictError):
                j.append("r", [_set(j, "lost", 1)], expected_seq=seq + 5)
            seq = other.append("r", [_set(other, "c", 1)], expected_seq=seq)
            seq = j.append("r", [_set(j, "d", 1)], expected_seq=seq)
            assert [s.seq for s in j.snapshots("r")] == [2, 4]
            assert j.verify("r").ok
            assert j.state_at("r").values == {"a": 1, "b": 1, "c": 1, "d": 1}
        finally:
            other.close()
            j.close()


class RecorderContract:
    """The recorder's operations, below the facade (eventsourcing's recorder test case
    shape). Subclasses provide :meth:`open_recorder`; the facade's checks (seals,
    codecs, errors) are not in play here."""

    def open_recorder(self, tmp_path: Path) -> Recorder:
        """Open a fresh, empty journal's recorder of the backend under test."""
        raise NotImplementedError

    @pytest.fixture
    def rec(self, tmp_path: Path) -> Any:
        recorder = self.open_recorder(tmp_path)
        yield recorder
        recorder.close()

    @staticmethod
    def _run(rec: Recorder, run_id: str, **fields: Any) -> bool:
        now = fields.pop("now", time.time())
        values = {
            "run_id": run_id, "kind": "function", "name": "f", "status": "pending",
            "codec": "json", "input": b"{}", "created_at": now, "updated_at": now,
            "last_seq": 0, "epoch": 0, "owner": None, "lease_expires_at": None,
            "wake_at": None, "parent_run_id": None, "forked_from": None, "forked_at": None,
            "code_version": None, "snapshot_every": None, "meta": "{}", "queue": None,
            "priority": 0,
        }  # fmt: skip
        values.update(fields)
        sealed = [values.get(f, None if f in ("output", "error") else 0) for f in SEALED_FIELDS]
        row = [values[f] for f in RUN_FIELDS if f not in ("output", "error", "horizon")]
        with rec.transaction("inserting"):
            return rec.insert_run([*row, run_checksum(sealed)])

    @staticmethod
    def _entries(n: int, tag: str = "e") -> list[NewEntry]:
        return [NewEntry(K.STATE_SET, f"{i}".encode(), "json", key=f"{tag}{i}") for i in range(n)]

    def test_insert_run_once_per_id(self, rec: Recorder) -> None:
        """A second insert of an id writes nothing; the row reads back as written."""
        assert self._run(rec, "r", name="first")
        assert not self._run(rec, "r", name="second")
        row = rec.select_run("r")
        assert row[RUN_FIELDS.index("name")] == "first" and rec.run_exists("r")
        assert rec.select_run("nope") is None and not rec.run_exists("nope")
        assert rec.run_names() == ["r"]

    def test_append_checks_its_guard_and_writes_all_or_nothing(self, rec: Recorder) -> None:
        """An append lands only after the expected seq, at the epoch, on an open run."""
        self._run(rec, "r")
        now = time.time()
        assert rec.append("r", self._entries(2), 0, None, now) == 2
        assert rec.append("r", self._entries(1), 0, None, now) is None  # seq moved on
        assert rec.append("r", self._entries(1), 2, 7, now) is None  # wrong epoch
        assert rec.append("nope", self._entries(1), 0, None, now) is None
        assert [r[1] for r in rec.select_entries("r", 1, 10)] == [1, 2]
        assert rec.fork_point("r") == (2, 0)
        assert rec.append("r", (), -1, None, now, changes={"status": "completed"}) == 2
        assert rec.append("r", self._entries(1), 2, None, now) is None  # ended
        assert len(rec.select_entries("r", 1, 10)) == 2

    def test_append_with_changes_reseals_and_snapshots_in_one_commit(self, rec: Recorder) -> None:
        """Run changes, the reseal from the stored sealed columns and a snapshot row
        land with the entries; a failed guard writes none of them."""
        self._run(rec, "r")
        seen: list[Any] = []

        def reseal(stored: Any) -> int:
            seen.append(list(stored))
            return 12345

        snap = ("r", 1, b"state", "json", "fp", 1, time.time())
        got = rec.append(
            "r", self._entries(1), 0, None, time.time(),
            changes={"status": "waiting", "wake_at": 5.0}, reseal=reseal, snapshot=snap,
        )  # fmt: skip
        assert got == 1
        assert seen and seen[0][SEALED_FIELDS.index("status")] == "pending"
        row = rec.select_run("r")
        assert row[RUN_FIELDS.index("status")] == "waiting" and row[-1] == 12345
        assert [s[1] for s in rec.snapshot_infos("r")] == [1]
        bad = ("r", 2, b"other", "json", "fp", 1, time.time())
        assert rec.append("r", self._entries(1), 0, None, time.time(), snapshot=bad) is None
        assert [s[1] for s in rec.snapshot_infos("r")] == [1]

    def test_claims_order_skip_and_respect_parents(self, rec: Recorder) -> None:
        """Candidates come by priority then age; a child waits for its parent; a
        claimed run is no candidate until its lease expires."""
        t = time.time()
        self._run(rec, "old", now=t - 3)
        self._run(rec, "new", now=t - 2)
        self._run(rec, "urgent", now=t - 1, priority=5)
        self._run(rec, "child", now=t - 4, parent_run_id="old")
        self._run(rec, "q", now=t - 5, queue="slow")
        with rec.transaction("claiming"):
            ids = [r[0] for r in rec.claim_candidates(t, 10, not_queues=["slow"])]
            assert ids == ["urgent", "old", "new"]
            assert [r[0] for r in rec.claim_candidates(t, 10, queue="slow")] == ["q"]
            assert [r[0] for r in rec.claim_candidates(t, 10, skip_names=["f"])] == []
            only = rec.claim_candidates(t, 10, run_ids=["new"], skip_run_ids=["old"])
            assert [r[0] for r in only] == ["new"]
            rec.mark_claimed("old", "w", t + 60, 1, t)
        assert rec.lease_row("old")[:2] == ("running", "w")
        assert rec.guard_row("old")[1] == 1  # the epoch rose
        with rec.transaction("claiming"):
            ids = [r[0] for r in rec.claim_candidates(t, 10)]
        assert "old" not in ids and "child" not in ids
        assert rec.running_in_queue("slow", t) == 0
        assert [r[0] for r in rec.claimable_rows(t, 10)] == ["q", "child", "new", "urgent"]

    def test_renew_only_for_the_holder_of_an_open_run(self, rec: Recorder) -> None:
        """A renewal needs the owner and the epoch, and the run open."""
        t = time.time()
        self._run(rec, "r", owner="w", epoch=3, lease_expires_at=t + 1, status="running")
        with rec.transaction("renewing"):
            assert rec.renew("r", "w", 3, t + 60)
            assert not rec.renew("r", "w", 2, t + 90)
            assert not rec.renew("r", "x", 3, t + 90)
        assert rec.lease_row("r")[2] == t + 60
        rec.append("r", (), -1, None, t, changes={"status": "failed"})
        with rec.transaction("renewing"):
            assert not rec.renew("r", "w", 3, t + 90)

    def test_snapshots_newest_first_above_the_horizon(self, rec: Recorder) -> None:
        """Snapshot rows read newest first within [horizon, seq]; a rewrite replaces."""
        self._run(rec, "r")
        rec.append("r", self._entries(6), 0, None, time.time())
        with rec.transaction("snapshots"):
            for seq in (2, 4, 6):
                rec.put_snapshot(("r", seq, b"x" * seq, "json", "fp", seq, 1.0))
            rec.put_snapshot(("r", 4, b"y" * 10, "json", "fp", 4, 2.0))
        assert [r[0] for r in rec.snapshot_rows("r", 5, 3)] == [4]
        assert [r[0] for r in rec.snapshot_rows("r", 6, 0)] == [6, 4, 2]
        assert [(s[1], s[4]) for s in rec.snapshot_infos("r")] == [(2, 2), (4, 10), (6, 6)]
        assert rec.tail_size("r", 5) == (4, 10, 1, 1)
        assert rec.run_codec_horizon("r") == ("json", 0)

    def test_select_runs_filters(self, rec: Recorder) -> None:
        """Filters combine; tags go through the index."""
        t = time.time()
        self._run(rec, "a", now=t - 2, status="completed")
        self._run(rec, "b", now=t - 1, parent_run_id="a")
        with rec.transaction("tags"):
            rec.index_tags("b", {"team": "x"})
        assert [r[0] for r in rec.select_runs(statuses=["completed"])] == ["a"]
        assert [r[0] for r in rec.select_runs(parent_run_id="a")] == ["b"]
        assert [r[0] for r in rec.select_runs(tags={"team": "x"})] == ["b"]
        assert [r[0] for r in rec.select_runs(created_after=t - 1.5)] == ["b"]
        assert [r[0] for r in rec.select_runs(newest_first=True, limit=1)] == ["b"]

    def test_schedules_put_move_and_delete(self, rec: Recorder) -> None:
        """A schedule is inserted once, moved only from the tick it is at, deleted."""
        values = [
            "nightly", "f", "0 3 * * *", "UTC", "skip", "json", b"{}", "{}", None,
            "api", 1.0, 0, 100.0, 1.0,
        ]  # fmt: skip
        assert len(values) == len(SCHEDULE_FIELDS)
        with rec.transaction("schedules"):
            assert rec.insert_schedule([*values, 1])
            assert not rec.insert_schedule([*values, 1])
            assert rec.update_schedule("nightly", {"next_at": 200.0}, next_at_was=100.0)
            assert not rec.update_schedule("nightly", {"next_at": 300.0}, next_at_was=100.0)
        assert rec.next_schedule_due() == 200.0
        assert [r[0] for r in rec.schedule_rows(due=250.0)] == ["nightly"]
        assert rec.schedule_rows(due=150.0) == []
        with rec.transaction("schedules"):
            assert rec.delete_schedule("nightly") and not rec.delete_schedule("nightly")
        assert rec.schedule_rows() == []
