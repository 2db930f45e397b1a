"""The journal contract: tests every journal backend must pass.

Subclass :class:`JournalContract` in a test module and implement
``open_journal(tmp_path, **options)``; pytest then runs the whole suite against
that backend. Needs the ``test`` extra (pytest).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
from .store import AppendRequest, Journal

__all__ = ["JournalContract"]

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
