"""The group committer: a lone commit is written on the loop's thread, commits submitted
in the same turn of the loop share one batch, and a submitter cancelled while it waits
for its turn leaves the others' commits to go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.committer import GroupCommitter
from journal import EntryKind, Journal


def _request(j: Journal, run_id: str) -> object:
    return j.new_run(run_id, name="f", entries=[j.entry(EntryKind.RUN_STARTED, {"owner": None})])


def test_alone_inline_together_batched_cancelled_dropped(tmp_path: Path) -> None:
    with Journal(tmp_path / "c.db", durability="process") as j:

        async def main() -> None:
            committer = GroupCommitter(j, asyncio.get_running_loop())
            try:
                await committer.submit(_request(j, "alone"))  # type: ignore[arg-type]
                assert (committer.inline, committer.batches) == (1, 1)

                results = await asyncio.gather(
                    *(committer.submit(_request(j, f"t{i}")) for i in range(5))  # type: ignore[arg-type]
                )
                assert [run.run_id for run, _ in results] == [f"t{i}" for i in range(5)]
                assert committer.inline == 1 and committer.batches == 2  # one batch of 5

                first = asyncio.ensure_future(committer.submit(_request(j, "cancelled")))  # type: ignore[arg-type]
                await asyncio.sleep(0)  # first now holds the turn's slot, yielding
                second = asyncio.ensure_future(committer.submit(_request(j, "kept")))  # type: ignore[arg-type]
                first.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await first
                run, created = await asyncio.wait_for(second, 10)
                assert run.run_id == "kept" and created
            finally:
                committer.close()

        asyncio.run(main())
        assert j.find_run("cancelled") is None  # dropped before anything was written
        assert {r.run_id for r in j.list_runs(limit=None)} == {
            "alone", "kept", *(f"t{i}" for i in range(5))
        }  # fmt: skip
