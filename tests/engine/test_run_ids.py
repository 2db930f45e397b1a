"""A run id is an idempotency key: the same start attaches to the existing run; the same
id with other input (or another function) is a RunIdConflict that writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from engine import (
    Context,
    Engine,
    RunIdConflict,
    StartEvent,
    StopEvent,
    Workflow,
    WrongFunction,
    configure,
    durable,
    step,
)
from journal import Journal

CALLS: dict[str, int] = {}


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


@durable
def charge(order: str, amount: int, *, currency: str = "EUR") -> str:
    _count("charge")
    return f"{order}:{amount}{currency}"


@durable
async def acharge(order: str, amount: int) -> str:
    _count("acharge")
    return f"{order}:{amount}"


@durable
def refund(order: str, amount: int, *, currency: str = "EUR") -> str:
    return f"-{order}"


class Greeting(Workflow):
    @step
    async def greet(self, ctx: Context, ev: StartEvent) -> StopEvent:
        _count("greet")
        return StopEvent(result=f"hello {ev.who}")


@pytest.fixture(autouse=True)
def eng(journal_location: str) -> Iterator[Engine]:
    CALLS.clear()
    engine = configure(journal_location, lease_seconds=5)
    yield engine
    engine.close()


def snapshot(journal: Journal) -> list[Any]:
    """Every run row and entry: what "nothing written" is checked against."""
    runs = journal.list_runs(limit=1000)
    return [(run, list(journal.read(run.run_id))) for run in runs]


class TestFunctions:
    def test_same_input_attaches(self, eng: Engine) -> None:
        """Sync run/start with the same input return the first run; it runs once."""
        assert charge.run("o1", 5, run_id="pay-1") == "o1:5EUR"
        assert charge.start("o1", 5, run_id="pay-1").result(timeout=10) == "o1:5EUR"
        # Arguments bound to the same parameters are the same input, defaults included.
        assert charge.run("o1", amount=5, run_id="pay-2") == "o1:5EUR"
        assert charge.run(amount=5, order="o1", currency="EUR", run_id="pay-2") == "o1:5EUR"
        assert CALLS["charge"] == 2
        assert [r.run_id for r in eng.journal.list_runs()] == ["pay-1", "pay-2"]

    def test_other_input_is_refused_and_writes_nothing(self, eng: Engine) -> None:
        """Another argument under an existing id raises, naming the id, the function and
        what differs; the journal is unchanged and the body does not run again."""
        charge.run("o1", 5, run_id="pay-1")
        before = snapshot(eng.journal)
        with pytest.raises(RunIdConflict, match=r"'pay-1'.*charge.*amount") as info:
            charge.run("o1", 6, run_id="pay-1")
        assert info.value.run_id == "pay-1"
        assert info.value.name == charge.name
        assert info.value.differences == ["amount"]
        with pytest.raises(RunIdConflict, match="currency"):
            charge.start("o1", 5, currency="USD", run_id="pay-1")
        with pytest.raises(RunIdConflict):
            eng.start(charge, ("o2", 5), {}, run_id="pay-1")
        assert snapshot(eng.journal) == before
        assert CALLS["charge"] == 1

    def test_other_function_is_refused(self, eng: Engine) -> None:
        """The same input to another function under the id is WrongFunction (a RunIdConflict)."""
        charge.run("o1", 5, run_id="pay-1")
        before = snapshot(eng.journal)
        with pytest.raises(WrongFunction, match="pay-1") as info:
            refund.run("o1", 5, run_id="pay-1")
        assert isinstance(info.value, RunIdConflict)
        assert snapshot(eng.journal) == before

    def test_async(self, eng: Engine) -> None:
        """Async functions: the same input attaches, other input raises, nothing written."""

        async def main() -> None:
            assert await acharge.run("o1", 5, run_id="a-1") == "o1:5"
            assert await acharge.run("o1", 5, run_id="a-1") == "o1:5"
            before = snapshot(eng.journal)
            with pytest.raises(RunIdConflict, match="amount, order"):
                await acharge.run("o2", 6, run_id="a-1")
            with pytest.raises(RunIdConflict):
                await acharge.run("o1", 7, run_id="a-1")
            assert snapshot(eng.journal) == before

        asyncio.run(main())
        assert CALLS["acharge"] == 1


class TestEnqueue:
    def test_same_input_attaches_other_input_is_refused(self, eng: Engine) -> None:
        """enqueue: the same input returns the queued run; other input raises and queues
        nothing; a run started directly is found by enqueue with its input too."""
        first = charge.enqueue("o1", 5, run_id="q-1")
        assert charge.enqueue("o1", 5, run_id="q-1").run_id == first.run_id
        before = snapshot(eng.journal)
        with pytest.raises(RunIdConflict, match="amount"):
            charge.enqueue("o1", 9, run_id="q-1")
        with pytest.raises(WrongFunction):
            refund.enqueue("o1", 5, run_id="q-1")
        assert snapshot(eng.journal) == before
        assert [r.status for r in eng.journal.list_runs()] == ["pending"]


class TestWorkflow:
    def test_same_input_attaches_other_input_is_refused(self, eng: Engine) -> None:
        """Workflow.run(run_id=...): the same start event attaches; another raises."""
        assert Greeting().run(who="ann", run_id="w-1").result(timeout=30) == "hello ann"
        assert Greeting().run(who="ann", run_id="w-1").result(timeout=30) == "hello ann"
        charge.run("o1", 5, run_id="pay-1")
        before = snapshot(eng.journal)
        with pytest.raises(RunIdConflict, match=r"'w-1'.*who"):
            Greeting().run(who="bob", run_id="w-1")
        with pytest.raises(WrongFunction):
            Greeting().run(who="ann", run_id="pay-1")
        assert snapshot(eng.journal) == before
        assert CALLS["greet"] == 1
