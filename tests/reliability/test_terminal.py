"""A terminal status is final: nothing is appended to or changed in a completed, failed or
cancelled run, checked in the transaction that would write it.

Unit tests per write path, a hypothesis state machine interleaving every operation on a
journal, and real-process races: ``cancel()`` against a run completing, and
``send_event()`` against ``cancel()`` on a waiting workflow.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from _children import PROCS
from _trials import scaled
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine import Engine, HumanResponseEvent, RunFinished, durable, send_event
from journal import (
    TERMINAL_STATUSES,
    AppendRequest,
    ConflictError,
    EntryKind,
    Journal,
    LeaseHeld,
    RunEnded,
)

K = EntryKind
TERMINAL_KINDS = {
    K.RUN_COMPLETED: "completed",
    K.RUN_FAILED: "failed",
    K.RUN_CANCELLED: "cancelled",
}
_END_OF = {status: kind for kind, status in TERMINAL_KINDS.items()}


def _ended(j: Journal, run_id: str, status: str) -> None:
    j.append(run_id, [j.entry(_END_OF[status])], expected_seq=None, status=status, release=True)


def _check_final(j: Journal, run_id: str) -> list[str]:
    """The run ended once, with its terminal entry last and matching its status; its kinds."""
    run = j.get_run(run_id)
    kinds = [e.kind for e in j.read(run_id)]
    ends = [k for k in kinds if k in TERMINAL_KINDS]
    assert run.status in TERMINAL_STATUSES, (run_id, run.status)
    assert len(ends) == 1 and kinds[-1] == ends[0], (run_id, kinds)
    assert TERMINAL_KINDS[ends[0]] == run.status, (run_id, kinds, run.status)
    return kinds


# -- every write path refuses a finished run ---------------------------------------------


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_no_write_path_changes_a_finished_run(journal_location: str, status: str) -> None:
    """Append (hot path and with a status), update, batch, claim and lease renewal of an
    ended run raise RunEnded naming its status, and write nothing."""
    with Journal(journal_location) as j:
        j.create_run("r", name="f", owner="w", lease_seconds=60)
        j.append("r", [j.entry(K.VALUE_RECORDED, 1)], expected_seq=0)
        j.append("r", [j.entry(_END_OF[status])], expected_seq=1, epoch=1, status=status)
        before = j.get_run("r")
        attempts: list[Any] = [
            lambda: j.append("r", [j.entry(K.VALUE_RECORDED, 2)], expected_seq=2),
            lambda: j.append("r", [j.entry(K.VALUE_RECORDED, 2)], expected_seq=2, epoch=1),
            lambda: j.append("r", [j.entry(K.EVENT_RECEIVED, 3)], expected_seq=None),
            lambda: j.append(
                "r", [j.entry(K.RUN_CANCELLED)], expected_seq=None, status="cancelled", release=True
            ),
            lambda: j.update_run("r", status="pending"),
            lambda: j.update_run("r", release=True),
            lambda: j.claim_run("r", "other", steal=True),
        ]
        for attempt in attempts:
            with pytest.raises(RunEnded, match=f"is {status}") as info:
                attempt()
            assert info.value.status == status and info.value.run_id == "r"
        [result] = j.append_batch([AppendRequest("r", [j.entry(K.VALUE_RECORDED, 4)], 2)])
        assert isinstance(result, RunEnded)
        with pytest.raises(ConflictError):
            j.renew_lease("r", "w", 1, 60)
        after = j.get_run("r")
        assert (after.status, after.last_seq, after.owner, after.epoch) == (
            before.status,
            before.last_seq,
            before.owner,
            before.epoch,
        )
        assert [e.kind for e in j.read("r")][-1] == _END_OF[status]
        assert j.claim_next("other") == []


def test_a_batch_refuses_what_follows_a_run_ending_in_it(journal_location: str) -> None:
    """Within one group commit, a request after the one that ends its run is refused."""
    with Journal(journal_location) as j:
        j.create_run("r", name="f")
        done = AppendRequest("r", [j.entry(K.RUN_COMPLETED)], 0, status="completed")
        late = AppendRequest("r", [j.entry(K.VALUE_RECORDED, 1)], 1)
        first, second = j.append_batch([done, late])
        assert first == 1 and isinstance(second, RunEnded)
        assert _check_final(j, "r") == [K.RUN_COMPLETED]


def test_forking_a_finished_run_leaves_it_as_it_is(tmp_path: Path) -> None:
    """A fork of an ended run is a new run; the source gains nothing."""
    with Journal(tmp_path / "j.db") as j:
        j.create_run("src", name="f", entries=[j.entry(K.RUN_STARTED)])
        _ended(j, "src", "failed")
        fork, created = j.create_run("fork", name="f", forked_from="src", forked_at=1)
        assert created and fork.status == "pending"
        j.append("fork", [j.entry(K.VALUE_RECORDED, 1)], expected_seq=0)
        assert _check_final(j, "src") == [K.RUN_STARTED, K.RUN_FAILED]


# -- the engine's callers ------------------------------------------------------------------


@durable
def _plain(x: int) -> int:
    return x + 1


def test_cancel_of_a_completed_run_reports_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cancel() that read the run as running before it completed writes nothing and says
    "completed"; result() still returns the value."""
    with Engine(tmp_path / "j.db") as eng:
        j = eng.journal
        j.create_run(
            "done", name=_plain.name, status="running", input=j.encode({"args": [1], "kwargs": {}})
        )
        stale = j.get_run("done")
        j.append(
            "done",
            [j.entry(K.RUN_COMPLETED)],
            expected_seq=0,
            status="completed",
            output=j.encode(2),
            release=True,
        )
        monkeypatch.setattr(j, "get_run", lambda run_id: stale)
        assert eng.cancel("done") == "completed"
        monkeypatch.undo()
        assert _check_final(j, "done") == [K.RUN_COMPLETED]
        assert eng.handle("done").result(timeout=5) == 2


def test_send_to_a_cancelled_workflow_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send_event() that read the run as waiting before it was cancelled raises RunFinished,
    writes nothing, and the run stays cancelled (nothing brings it back to pending)."""
    sys.path.insert(0, str(PROCS))
    import terminal_race

    with Engine(tmp_path / "j.db") as eng:
        j = eng.journal
        j.create_run(
            "w",
            name=terminal_race.Ask._name,
            kind="workflow",
            status="waiting",
            entries=[j.entry(K.RUN_STARTED)],
        )
        stale = j.get_run("w")
        assert eng.cancel("w") == "cancelled"
        monkeypatch.setattr(j, "get_run", lambda run_id: stale)
        with pytest.raises(RunFinished, match="cancelled"):
            send_event("w", HumanResponseEvent(response="late"), engine=eng)
        monkeypatch.undo()
        assert j.get_run("w").status == "cancelled"
        assert _check_final(j, "w") == [K.RUN_STARTED, K.RUN_CANCELLED]
        with pytest.raises(RunFinished, match="cancelled"):  # and read as it is now
            send_event("w", HumanResponseEvent(response="late"), engine=eng)


# -- a state machine over every operation ------------------------------------------------


class TerminalMachine(RuleBasedStateMachine):
    """Creates, claims, appends, parks, sends, completes, fails, cancels, batches and forks
    in any order, with stale expectations; a finished run never changes again."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.j = Journal(Path(self._dir.name) / "j.db")
        self.ids: list[str] = []
        self.final: dict[str, tuple[str, int, int]] = {}  # run -> (status, last seq, epoch)

    def teardown(self) -> None:
        self.j.close()
        self._dir.cleanup()

    def _attempt(self, run_id: str, write: Any) -> None:
        """Do ``write``; it must raise RunEnded exactly when the run had ended."""
        try:
            write()
        except RunEnded as exc:
            assert run_id in self.final, f"{run_id} is open but a write said {exc}"
            return
        except (ConflictError, LeaseHeld):
            return  # a stale seq or a held lease: refused for its own reason
        assert run_id not in self.final, f"a write landed on {run_id} after it ended"
        run = self.j.get_run(run_id)
        if run.status in TERMINAL_STATUSES:
            self.final[run_id] = (run.status, run.last_seq, run.epoch)

    @rule(parked=st.booleans())
    def create(self, parked: bool) -> None:
        run_id = f"r{len(self.ids)}"
        self.j.create_run(run_id, name="f", status="waiting" if parked else "pending")
        self.ids.append(run_id)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), owner=st.sampled_from(["a", "b"]), steal=st.booleans())
    def claim(self, data: st.DataObject, owner: str, steal: bool) -> None:
        run_id = data.draw(st.sampled_from(self.ids))
        self._attempt(run_id, lambda: self.j.claim_run(run_id, owner, steal=steal))

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), n=st.integers(1, 3), stale=st.integers(0, 2), fenced=st.booleans())
    def append(self, data: st.DataObject, n: int, stale: int, fenced: bool) -> None:
        run_id = data.draw(st.sampled_from(self.ids))
        run = self.j.get_run(run_id)
        entries = [self.j.entry(K.VALUE_RECORDED, i) for i in range(n)]
        epoch = run.epoch if not fenced else run.epoch - 1
        self._attempt(
            run_id,
            lambda: self.j.append(run_id, entries, expected_seq=run.last_seq - stale, epoch=epoch),
        )

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), status=st.sampled_from(sorted(TERMINAL_STATUSES)), known=st.booleans())
    def end(self, data: st.DataObject, status: str, known: bool) -> None:
        run_id = data.draw(st.sampled_from(self.ids))
        seq = self.j.get_run(run_id).last_seq if known else None
        self._attempt(
            run_id,
            lambda: self.j.append(
                run_id,
                [self.j.entry(_END_OF[status])],
                expected_seq=seq,
                status=status,
                release=True,
            ),
        )

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), status=st.sampled_from(["pending", "running", "waiting"]))
    def set_status(self, data: st.DataObject, status: str) -> None:
        run_id = data.draw(st.sampled_from(self.ids))
        self._attempt(run_id, lambda: self.j.update_run(run_id, status=status))

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(self.ids))
        self._attempt(
            run_id,
            lambda: self.j.append(
                run_id,
                [self.j.entry(K.EVENT_RECEIVED, {"x": 1})],
                expected_seq=None,
                status="pending",
            ),
        )

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), status=st.sampled_from(sorted(TERMINAL_STATUSES)))
    def batch(self, data: st.DataObject, status: str) -> None:
        a = data.draw(st.sampled_from(self.ids))
        b = data.draw(st.sampled_from(self.ids))
        was_open = {r: r not in self.final for r in (a, b)}
        requests = [
            AppendRequest(a, [self.j.entry(_END_OF[status])], -1, status=status),
            AppendRequest(b, [self.j.entry(K.VALUE_RECORDED, 1)], -1),
        ]
        first, second = self.j.append_batch(requests)
        assert isinstance(first, RunEnded) == (not was_open[a])
        ends_b = not was_open[b] or a == b
        assert isinstance(second, RunEnded) == ends_b, (a, b, second)
        run = self.j.get_run(a)
        if was_open[a]:
            self.final[a] = (run.status, run.last_seq, run.epoch)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.ids))
        at = data.draw(st.integers(0, self.j.get_run(source).last_seq))
        run_id = f"r{len(self.ids)}"
        self.j.create_run(run_id, name="f", forked_from=source, forked_at=at)
        self.ids.append(run_id)

    @invariant()
    def finished_runs_never_change(self) -> None:
        for run_id in self.ids:
            run = self.j.get_run(run_id)
            kinds = [e.kind for e in self.j.read(run_id)]
            ends = [i for i, k in enumerate(kinds) if k in TERMINAL_KINDS]
            # A terminal entry is the run's last and only one, and only with its status.
            assert ends in ([], [len(kinds) - 1]), (run_id, kinds)
            assert (run.status in TERMINAL_STATUSES) == bool(ends), (run_id, run.status, kinds)
            if ends:
                assert TERMINAL_KINDS[kinds[-1]] == run.status
            if run_id in self.final:
                assert self.final[run_id] == (run.status, run.last_seq, run.epoch), run_id


TestTerminalMachine = pytest.mark.slow(TerminalMachine.TestCase)  # the races below stay quick
TestTerminalMachine.settings = settings(
    max_examples=scaled(60),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- process races ---------------------------------------------------------------------------


def _records(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out.setdefault(record.pop("run_id"), {}).update(record)
    return out


def _pair(first: tuple[Any, ...], second: tuple[Any, ...], *extra: tuple[Any, ...]) -> None:
    """Run the process functions ``(target, *args)`` at once, the first two sharing a
    barrier as their third argument; each must exit 0."""
    # The journal (its PostgreSQL schema) made first: processes creating one schema at
    # once is not what these tests race.
    Journal(first[1]).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=90)
    procs = [
        ctx.Process(target=first[0], args=(*first[1:3], barrier, *first[3:])),
        ctx.Process(target=second[0], args=(*second[1:3], barrier, *second[3:])),
        *(ctx.Process(target=e[0], args=e[1:]) for e in extra),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)


def _cancel_vs_complete(tmp_path: Path, db: str, batches: int, per_batch: int) -> None:
    sys.path.insert(0, str(PROCS))
    import terminal_race as tr

    results, cancels = tmp_path / "results.jsonl", tmp_path / "cancels.jsonl"
    for b in range(batches):
        ids = [f"q{b}-{i}" for i in range(per_batch)]
        _pair((tr.run_quick, db, ids, str(results)), (tr.cancel_each, db, ids, str(cancels), ""))
    got, said = _records(results), _records(cancels)
    seen = {"completed": 0, "cancelled": 0}
    with Journal(db) as j:
        for b in range(batches):
            for i in range(per_batch):
                run_id = f"q{b}-{i}"
                _check_final(j, run_id)
                status = j.get_run(run_id).status
                seen[status] += 1
                assert said[run_id]["cancel"] == status, (run_id, said[run_id], status)
                expected = (i % 4) * 10 if status == "completed" else "cancelled"
                assert got[run_id]["result"] == expected, (run_id, got[run_id], status)
    assert sum(seen.values()) == batches * per_batch
    print(f"cancel vs completion: {seen}")


def _send_vs_cancel(tmp_path: Path, db: str, batches: int, per_batch: int) -> None:
    sys.path.insert(0, str(PROCS))
    import terminal_race as tr

    sends, cancels, log = (tmp_path / n for n in ("sends.jsonl", "cancels.jsonl", "ran.log"))
    for b in range(batches):
        ids = [f"w{b}-{i}" for i in range(per_batch)]
        _pair(
            (tr.send_each, db, ids, str(sends)),
            (tr.cancel_each, db, ids, str(cancels), "waiting"),
            (tr.host_asks, db, ids, str(log)),
        )
    sent, said = _records(sends), _records(cancels)
    ran = log.read_text().split() if log.exists() else []
    assert len(ran) == len(set(ran)), "a step ran past its wait twice"
    seen = {"refused": 0, "sent, then cancelled": 0, "completed": 0}
    with Journal(db) as j:
        for b in range(batches):
            for i in range(per_batch):
                run_id = f"w{b}-{i}"
                kinds = _check_final(j, run_id)
                status = j.get_run(run_id).status
                assert said[run_id]["cancel"] == status, (run_id, said[run_id], status)
                if sent[run_id]["sent"] is None:
                    # Refused: it had ended, and nothing brought it back or ran its step.
                    seen["refused"] += 1
                    assert status == "cancelled" and K.EVENT_RECEIVED not in kinds, kinds
                    assert run_id not in ran
                elif status == "cancelled":
                    seen["sent, then cancelled"] += 1
                    assert kinds.index(K.EVENT_RECEIVED) < kinds.index(K.RUN_CANCELLED)
                else:
                    seen["completed"] += 1
                    assert run_id in ran
    print(f"send vs cancel: {seen}")


def test_cancel_racing_completion(tmp_path: Path, journal_location: str) -> None:
    """30 runs, each cancelled by another process as it completes: every run ends once,
    cancel() reports what it ended as, and result() agrees."""
    _cancel_vs_complete(tmp_path, journal_location, 1, 30)


def test_send_racing_cancel_on_a_waiting_workflow(tmp_path: Path, journal_location: str) -> None:
    """30 waiting workflow runs, each sent its answer and cancelled by two processes at once:
    a refused send leaves the run cancelled with its step not run."""
    _send_vs_cancel(tmp_path, journal_location, 1, 30)


@pytest.mark.slow
def test_cancel_racing_completion_300(tmp_path: Path) -> None:
    """The completion race, 300 trials in six fresh process pairs."""
    _cancel_vs_complete(tmp_path, str(tmp_path / "j.db"), 6, 50)


@pytest.mark.slow
def test_send_racing_cancel_300(tmp_path: Path) -> None:
    """The send/cancel race on waiting workflows, 300 trials in six fresh process sets."""
    _send_vs_cancel(tmp_path, str(tmp_path / "j.db"), 6, 50)
