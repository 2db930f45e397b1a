"""Child-process program for tests/engine/test_long_runs.py (continue_as_new under SIGKILL).

``python continue_child.py run LOCATION LOG KILL_AT GENERATION``: run a chain of
:func:`chain` runs (5 steps each, 20 in all, run id ``c``), SIGKILLing itself at
the handover to ``c~GENERATION``: ``before`` (nothing sent yet), ``inside`` (both
the end of the old run and the new run written, COMMIT not sent) or ``after`` (the
COMMIT returned). ``recover LOCATION LOG``: recover what is left, print the result.
Every step body appends ``"<run_id> <i>"`` to LOG (fsynced) before returning.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from engine import Context, configure, durable, step
from journal import Journal

TOTAL = 20
PER_RUN = 5
LEASE = 0.3
LOG = Path(os.environ.get("CONTINUE_LOG", os.devnull))


@step
def work(run_id: str, i: int) -> int:
    with LOG.open("a") as f:
        f.write(f"{run_id} {i}\n")
        f.flush()
        os.fsync(f.fileno())
    return i * i


@durable(name="continue_child:chain")
def chain(ctx: Context[Any], start: int, acc: int) -> int:
    for i in range(start, min(start + PER_RUN, TOTAL)):
        acc += work(ctx.run_id, i)
        ctx.state["last"] = i
    if start + PER_RUN < TOTAL:
        ctx.continue_as_new(start + PER_RUN, acc)
    return acc


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hook(kill_at: str, generation: int) -> None:
    target = f"c~{generation}"
    continue_run = Journal.continue_run
    create = Journal._create

    def continuing(self: Journal, run_id: str, *args: Any, **kwargs: Any) -> Any:
        new = kwargs["continuation"].run.run_id
        if new == target and kill_at == "before":
            die()
        run = continue_run(self, run_id, *args, **kwargs)
        if new == target and kill_at == "after":
            die()
        return run

    def creating(self: Journal, req: Any) -> Any:
        made = create(self, req)
        if req.run.run_id == target and kill_at == "inside":
            die()
        return made

    Journal.continue_run = continuing  # type: ignore[method-assign]
    Journal._create = creating  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    mode, location = argv[0], argv[1]
    eng = configure(location, lease_seconds=LEASE)
    if mode == "run":
        hook(argv[2], int(argv[3]))
        print(json.dumps({"result": chain.run(0, 0, run_id="c")}), flush=True)
        return
    report = eng.recover(wait_leased=True, timeout=30)
    result = eng.handle("c").result(timeout=60)
    print(json.dumps({"result": result, "resumed": report.run_ids}), flush=True)
    eng.close()


if __name__ == "__main__":
    main(sys.argv[1:])
