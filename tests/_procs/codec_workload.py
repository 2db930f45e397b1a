"""A function and a workflow with codecs of their own, crashed and recovered by
tests/engine/test_run_codecs.py (imported by name, never run).

- ``CODEC_LOG``: each step appends ``"<run_id> <step>"`` to this file before it returns.
- ``CODEC_CRASH=1``: the second step SIGKILLs this process once its line is logged (its
  completion never journaled), so a recovering process runs it again and the first not.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from engine import Context, Event, StartEvent, StopEvent, Workflow, durable, step
from journal import PickleSerializer

KEY = b"function key, not the journal's"
WORKFLOW_KEY = b"workflow key, not the journal's"


class Secret:
    """A value JSON cannot encode: only the pickle codec stores it."""

    def __init__(self, n: int) -> None:
        self.n = n


def _log(run_id: str, name: str) -> None:
    with open(os.environ["CODEC_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{run_id} {name}\n")
        f.flush()
        os.fsync(f.fileno())
    if name.endswith("second") and os.environ.get("CODEC_CRASH") == "1":
        os.kill(os.getpid(), signal.SIGKILL)


@step
def first(run_id: str, x: int) -> Secret:
    """Returns a value only pickle stores."""
    _log(run_id, "first")
    return Secret(x)


@step
def second(run_id: str, s: Secret) -> int:
    """Crashes the process when ``CODEC_CRASH=1``."""
    _log(run_id, "second")
    return s.n * 2


@durable(codec=PickleSerializer(hmac_key=KEY), snapshot_every=2)
def job(ctx: Context[Any], x: int) -> dict[str, Any]:
    """Two steps, state only pickle stores, and a result with a lambda in it."""
    s = first(ctx.run_id, x)
    ctx.state["secret"] = s
    doubled = second(ctx.run_id, s)
    return {"doubled": doubled, "again": lambda: doubled + 1}


class Half(Event):
    secret: Any


class Signed(Workflow, codec=PickleSerializer(hmac_key=WORKFLOW_KEY)):
    """Two steps; the event between them carries a value only pickle stores."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Half:
        _log(ctx.run_id, "wf-first")
        return Half(secret=Secret(ev.x))

    @step
    async def end(self, ctx: Context[Any], ev: Half) -> StopEvent:
        _log(ctx.run_id, "wf-second")
        return StopEvent(result=ev.secret.n * 3)
