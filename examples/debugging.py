"""Replay debugging: today's code against a recorded run, and what a refactor breaks.

1. A ``@durable`` checkout runs and is journaled.
2. ``engine.replay(run_id)`` re-executes the unchanged code against the journal: it
   is ok, and no step body executes (steps return their recorded results).
3. ``engine.replay(run_id, until=2)`` stops after the second recorded step, with the
   state as it was there (set a breakpoint in the body to look around).
4. "Version 2" renames the ``tax`` step to ``vat`` and is deployed under the SAME
   ``name=``: replay reports the divergence precisely (seq, recorded, got), which is
   what recovering a run in flight would meet.
5. The fix: keep the step's recorded name (``@step(name="tax")``); replay is ok again.

Run it from the repository root: ``python examples/debugging.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections import Counter
from typing import Any

import engine
from engine import Context, durable, step

NAME = "examples.debugging:checkout"
PRICES = {"apple": 50, "fig": 30, "banana": 60}
EXECUTED: Counter[str] = Counter()
"""Real executions of step bodies in this process."""


@step
def price(item: str) -> int:
    EXECUTED["price"] += 1
    return PRICES[item]


@step
def tax(amount: int) -> int:
    EXECUTED["tax"] += 1
    return amount // 10


@step
def charge(amount: int) -> str:
    EXECUTED["charge"] += 1
    return f"receipt-{amount}"


@durable(name=NAME)
def checkout(ctx: Context, items: list[str]) -> dict[str, Any]:
    """Version 1, the code the run was recorded with."""
    ctx.state["cart"] = []
    ctx.state["subtotal"] = 0
    for item in items:
        cost = price(item)
        ctx.state["cart"] = [*ctx.state["cart"], item]
        ctx.state["subtotal"] += cost
    ctx.state["tax"] = tax(ctx.state["subtotal"])
    receipt = charge(ctx.state["subtotal"] + ctx.state["tax"])
    return {"receipt": receipt, "total": ctx.state["subtotal"] + ctx.state["tax"]}


# -- version 2: a refactor renames the tax step ---------------------------------------


@step
def vat(amount: int) -> int:
    EXECUTED["vat"] += 1
    return amount // 10


def checkout_v2(ctx: Context, items: list[str]) -> dict[str, Any]:
    ctx.state["cart"] = []
    ctx.state["subtotal"] = 0
    for item in items:
        cost = price(item)
        ctx.state["cart"] = [*ctx.state["cart"], item]
        ctx.state["subtotal"] += cost
    ctx.state["tax"] = vat(ctx.state["subtotal"])  # <- the only change: tax() is now vat()
    receipt = charge(ctx.state["subtotal"] + ctx.state["tax"])
    return {"receipt": receipt, "total": ctx.state["subtotal"] + ctx.state["tax"]}


# -- version 3: the fix keeps the recorded step name ----------------------------------


@step(name="tax")
def vat_fixed(amount: int) -> int:
    EXECUTED["vat"] += 1
    return amount // 10


def checkout_v3(ctx: Context, items: list[str]) -> dict[str, Any]:
    ctx.state["cart"] = []
    ctx.state["subtotal"] = 0
    for item in items:
        cost = price(item)
        ctx.state["cart"] = [*ctx.state["cart"], item]
        ctx.state["subtotal"] += cost
    ctx.state["tax"] = vat_fixed(ctx.state["subtotal"])
    receipt = charge(ctx.state["subtotal"] + ctx.state["tax"])
    return {"receipt": receipt, "total": ctx.state["subtotal"] + ctx.state["tax"]}


# -- the story --------------------------------------------------------------------------


def story(db: str) -> int:
    engine.configure(db)
    run_id = f"checkout-{uuid.uuid4().hex[:6]}"
    items = ["apple", "fig", "banana"]

    print(f"1. Record a run of {NAME} (version 1)")
    result = checkout.run(items, run_id=run_id)
    print(f"   result: {result}; step bodies executed: {dict(EXECUTED)}")
    for cp in engine.history(run_id):
        print(f"   #{cp.number} seq {cp.seq:<3} {cp.kind:<15} {cp.step or ''}")

    print("\n2. engine.replay(run_id) with the unchanged code")
    EXECUTED.clear()
    report = engine.replay(run_id)
    print(f"   {report.describe()}")
    print(f"   step bodies executed during the replay: {sum(EXECUTED.values())}")
    ok = report.ok and not EXECUTED

    print("\n3. engine.replay(run_id, until=2): stop after the second recorded step")
    report = engine.replay(run_id, until=2)
    print(f"   {report.describe()}")
    print(f"   ctx.state there: {report.state}")
    print("   (price#2 has returned fig's price; the body has not added it to the cart yet)")
    same = report.state == engine.state_at(run_id, step=2).to_dict()
    print(f"   the same as engine.state_at(run_id, step=2): {same}")
    ok = ok and report.ok and same

    print(f"\n4. Deploy version 2 under the same name ({NAME}): tax() renamed to vat()")
    durable(name=NAME)(checkout_v2)
    report = engine.replay(run_id)
    print(f"   ok: {report.ok}")
    if report.divergence is not None:
        print(f"   divergence at seq {report.divergence['seq']}:")
        print(f"      recorded: {report.divergence['recorded']}")
        print(f"      got:      {report.divergence['got']}")
    print(f"   {report.error}")
    ok = ok and not report.ok and report.divergence is not None

    print('\n5. The fix: @step(name="tax") on vat(), so the recorded name still matches')
    durable(name=NAME)(checkout_v3)
    EXECUTED.clear()
    report = engine.replay(run_id)
    print(f"   {report.describe()}; step bodies executed: {sum(EXECUTED.values())}")
    ok = ok and report.ok and not EXECUTED
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="journal path (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-example-") as tmp:
        try:
            return story(args.db or os.path.join(tmp, "journal.db"))
        finally:
            engine.default_engine().close()


if __name__ == "__main__":
    sys.exit(main())
