"""Time travel and replay debugging over recorded @durable runs."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Context,
    Engine,
    StepNotFound,
    configure,
    current_context,
    diff,
    durable,
    fork,
    history,
    replay,
    replay_all,
    state_at,
    step,
)
from journal import EntryKind, HorizonError, Journal, RetentionPolicy, RunNotFound

CALLS: Counter[str] = Counter()
LIVE_STATES: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    CALLS.clear()
    LIVE_STATES.clear()
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


@step
def price(item: str) -> int:
    CALLS[f"price:{item}"] += 1
    return len(item) * 10


@step
def tax(amount: int) -> int:
    CALLS["tax"] += 1
    return amount // 10


@durable(name="tt:checkout")
def checkout(ctx: Context, items: list[str]) -> dict[str, Any]:
    ctx.state["cart"] = []
    for item in items:
        cost = price(item)
        ctx.state["cart"] = [*ctx.state["cart"], {"item": item, "cost": cost}]
        ctx.state["subtotal"] = ctx.state.get("subtotal", 0) + cost
        LIVE_STATES.append(dict(ctx.state))
    ctx.state["tax"] = tax(ctx.state["subtotal"])
    LIVE_STATES.append(dict(ctx.state))
    return {"total": ctx.state["subtotal"] + ctx.state["tax"], "n": len(ctx.state["cart"])}


ITEMS = ["apple", "fig", "banana"]


@step
def charge(amount: int) -> str:
    current_context().state["charged"] = amount
    return f"rcpt-{amount}"


@step
def ship(receipt: str) -> str:
    current_context().state["shipped"] = True
    return receipt.upper()


@durable(name="tt:tagging")
def tagging(ctx: Context) -> str:
    ctx.state["order"] = 1
    receipt = charge(5)
    ctx.state["receipt"] = receipt  # follows charge#1's result
    out = ship(receipt)
    ctx.state["done"] = out
    return out


class TestHistory:
    """history() lists one checkpoint per unit of work."""

    def test_checkpoints_in_order_with_changes(self) -> None:
        """Each step is a checkpoint naming its step key and the keys it changed."""
        checkout.run(ITEMS, run_id="h")
        cps = history("h")
        assert [c.kind for c in cps] == [EntryKind.STEP_COMPLETED] * 4 + [EntryKind.RUN_COMPLETED]
        assert [c.step for c in cps[:4]] == ["price#1", "price#2", "price#3", "tax#4"]
        assert [c.number for c in cps] == [1, 2, 3, 4, 5]
        assert cps[0].attempt == 1 and cps[0].duration is not None and cps[0].duration >= 0
        assert cps[-1].body_set_keys == ("tax",) and cps[-1].set_keys == ()

    def test_body_mutations_are_credited_apart_from_the_step(self) -> None:
        """The body's mutations after price#1 (cart, subtotal) are shown on price#2's row as
        the body's, not as price#2's own; a step's own mutation is its own."""
        tagging.run(run_id="credit")
        cps = history("credit")
        assert [c.step for c in cps] == ["charge#1", "ship#2", None]
        assert (cps[0].set_keys, cps[0].body_set_keys) == (("charged",), ("order",))
        assert (cps[1].set_keys, cps[1].body_set_keys) == (("shipped",), ("receipt",))
        assert (cps[2].set_keys, cps[2].body_set_keys) == ((), ("done",))
        assert "body set receipt" in cps[1].summary() and "set shipped" in cps[1].summary()
        # What a row names is in the state at that row, and not before it.
        assert "receipt" in state_at("credit", 2).values
        assert "receipt" not in state_at("credit", 1).values

    def test_unknown_run(self) -> None:
        """history of an unknown run is RunNotFound."""
        with pytest.raises(RunNotFound):
            history("nope")


class TestStateAt:
    """state_at() returns the state as it was."""

    def test_state_at_every_step_equals_the_live_state(self) -> None:
        """At each checkpoint, the state equals what the body saw live at that point."""
        checkout.run(ITEMS, run_id="s")
        # Mutations after step N commit with step N+1: the state the body had after
        # step N's mutations is the state at checkpoint N+1's seq minus nothing else.
        for n, live in enumerate(LIVE_STATES, start=2):
            assert dict(state_at("s", step=n).values) == live, n
        assert dict(state_at("s", step=0).values) == {}
        assert dict(state_at("s").values) == LIVE_STATES[-1]

    def test_bad_step_number(self) -> None:
        """A step past the end is a clear error."""
        checkout.run(ITEMS, run_id="s2")
        with pytest.raises(StepNotFound, match="no step 99"):
            state_at("s2", step=99)

    def test_state_is_read_only(self) -> None:
        """The view cannot be written."""
        checkout.run(ITEMS, run_id="ro")
        view = state_at("ro", step=2)
        with pytest.raises(TypeError):
            view.values["cart"] = []  # type: ignore[index]


class TestDiff:
    """diff() between steps and runs."""

    def test_diff_between_consecutive_steps_equals_the_journaled_mutations(
        self, db_path: Path
    ) -> None:
        """The diff of steps N-1..N names exactly the keys journaled in between."""
        checkout.run(ITEMS, run_id="d")
        cps = history("d")
        for prev, cur in itertools.pairwise(cps):
            d = diff("d", prev.number, cur.number)
            touched = {p.split(".")[0].split("[")[0] for p in [*d.added, *d.changed, *d.removed]}
            assert touched == {*cur.set_keys, *cur.body_set_keys}, cur.number

    def test_nested_paths_and_values(self) -> None:
        """Nested changes are reported by path with old and new values."""
        checkout.run(ITEMS, run_id="d2")
        d = diff("d2", 2, 3)
        assert d.added == {"cart[1]": {"item": "fig", "cost": 30}}
        assert d.changed == {"subtotal": (50, 80)}
        assert not d.removed and not d.empty


class TestFork:
    """fork() continues a new run from any step, with edits, sealed from its source."""

    def test_fork_with_edit_reflects_it_and_leaves_the_source_alone(self, db_path: Path) -> None:
        """The fork's result uses the edited value; the source is unchanged; both are listed."""
        original = checkout.run(ITEMS, run_id="src")
        before = [(e.seq, e.kind, e.payload) for e in Journal(db_path).read("src")]
        CALLS.clear()
        handle = fork("src", at=2, state={"subtotal": 1000}, new_run_id="forked")
        result = handle.result(timeout=30)
        assert result == {"total": (1000 + 30 + 60) + 109, "n": 3}  # edit lands after step 2
        assert original == {"total": 140 + 14, "n": 3}
        assert Counter({"price:banana": 1, "tax": 1}) == CALLS  # steps 1-2 were not re-run
        with Journal(db_path) as j:
            assert [(e.seq, e.kind, e.payload) for e in j.read("src")] == before
            fork_run = j.get_run("forked")
            assert (fork_run.forked_from, fork_run.status) == ("src", "completed")
            assert {r.run_id for r in j.list_runs()} == {"src", "forked"}
        assert history("forked")[1].step == "price#2"  # shares the source's history
        # Step 2 of the fork is its source's step 2 with the edits; step N+1 on is the
        # same step of the same code in both.
        assert state_at("forked", step=2).values == {
            **state_at("src", step=2).values,
            "subtotal": 1000,
        }
        assert state_at("forked", step=1).values == state_at("src", step=1).values
        assert diff("src", 2, 2, other_run_id="forked").changed == {"subtotal": (50, 1000)}
        same = diff("src", 3, 3, other_run_id="forked")
        assert not same.added and not same.removed and set(same.changed) == {"subtotal"}

    def test_fork_checkpoints_are_numbered_as_their_source(self) -> None:
        """A fork's run.forked checkpoint takes its fork point's number and holds the edits;
        the checkpoints after it carry the same numbers and steps as the source's."""
        checkout.run(ITEMS, run_id="n-src")
        fork("n-src", at=2, state={"subtotal": 7}, new_run_id="n-fork").result(timeout=30)
        src, forked = history("n-src"), history("n-fork")
        assert [(c.number, c.kind) for c in forked[:3]] == [
            (1, EntryKind.STEP_COMPLETED),
            (2, EntryKind.STEP_COMPLETED),
            (2, EntryKind.RUN_FORKED),
        ]
        assert forked[2].set_keys == ("subtotal",)
        assert forked[3].body_set_keys == src[2].body_set_keys  # the edit is not among them
        own = [(c.number, c.kind, c.step) for c in forked[3:]]
        assert own == [(c.number, c.kind, c.step) for c in src[2:]]
        # A fork of the fork, at its fork point, numbers on the same way.
        fork("n-fork", at=2, new_run_id="n-fork2").result(timeout=30)
        assert [c.number for c in history("n-fork2")][-3:] == [3, 4, 5]
        assert state_at("n-fork2", 2).values["subtotal"] == 7

    def test_source_writes_after_the_fork_point_do_not_reach_the_fork(self, db_path: Path) -> None:
        """A fork of an unfinished run does not see what the source records later."""
        checkout.run(ITEMS, run_id="a")
        handle = fork("a", at=1, new_run_id="b")
        handle.result(timeout=30)
        with Journal(db_path) as j:
            assert j.get_run("b").forked_at == history("a")[0].seq

    def test_fork_past_the_horizon_is_refused(self, db_path: Path) -> None:
        """A compacted source cannot be forked; the error names the horizon."""
        checkout.run(ITEMS, run_id="c")
        with Journal(db_path) as j:
            j.compact("c", RetentionPolicy(keep_snapshots=1))
            assert j.get_run("c").horizon > 0
        with pytest.raises(HorizonError, match="compacted"):
            fork("c", at=1)

    def test_fork_of_unknown_run_and_bad_step(self) -> None:
        """Forking refuses a missing source and a step that does not exist."""
        with pytest.raises(RunNotFound):
            fork("ghost", at=1)
        checkout.run(ITEMS, run_id="e")
        with pytest.raises(StepNotFound):
            fork("e", at=42)


@durable(name="tt:pipeline")
def pipeline_v1(ctx: Context) -> int:
    a = price("one")
    b = price("three")
    return a + tax(b)


class TestReplay:
    """replay() re-executes today's code against the journal without side effects."""

    def test_unchanged_program_replays_ok_without_running_steps(self) -> None:
        """An unchanged program replays ok, and no step body executes."""
        pipeline_v1.run(run_id="r")
        CALLS.clear()
        report = replay("r")
        assert report.ok, report.error
        assert report.calls_replayed == 3
        assert sum(CALLS.values()) == 0

    @pytest.mark.parametrize(
        ("variant", "expected"),
        [
            ("reordered", "recorded step.completed 'price#1' at seq 2 but the code now calls"),
            ("renamed", "'price#2' at seq 3 but the code now calls step.completed 'tax#2'"),
            ("removed", "recorded step.completed 'tax#3' at seq 4 but the code returned"),
        ],
    )
    def test_changed_program_reports_the_precise_divergence(
        self, variant: str, expected: str
    ) -> None:
        """Reordered, renamed and removed steps each name the seq and both calls."""
        pipeline_v1.run(run_id="r")

        def reordered(ctx: Context) -> int:
            b = tax(3)
            return price("one") + price("three") + b

        def renamed(ctx: Context) -> int:
            return price("one") + tax(tax(3))

        def removed(ctx: Context) -> int:
            return price("one") + price("three")

        body = {"reordered": reordered, "renamed": renamed, "removed": removed}[variant]
        durable(name="tt:pipeline")(body)
        try:
            CALLS.clear()
            report = replay("r")
        finally:
            durable(name="tt:pipeline")(pipeline_v1.fn)
        assert not report.ok
        assert expected in (report.error or "")
        assert report.divergence is not None and report.divergence["seq"] in (2, 3, 4)
        assert sum(CALLS.values()) == 0

    def test_until_stops_with_the_state_there(self) -> None:
        """replay(until=N) stops after N calls with the Context as it was."""
        checkout.run(ITEMS, run_id="u")
        report = replay("u", until=2)
        assert report.ok and report.calls_replayed == 2
        assert report.state["subtotal"] == 50  # the body stopped inside item 2's step

    def test_replay_all_checks_every_run(self) -> None:
        """replay_all covers every stored run and reports each."""
        pipeline_v1.run(run_id="x1")
        checkout.run(ITEMS, run_id="x2")
        reports = replay_all()
        assert {r.run_id for r in reports} == {"x1", "x2"}
        assert all(r.ok for r in reports)
