"""The demo's workload: an order pipeline of eight steps, and the child processes that
start it (to be SIGKILLed) and recover it (see ``python -m engine.demo``).

Each step appends a line to a side-effect log (open, append, fsync) as it starts, so
the demo can count how many times each step really executed across processes, and
keeps its progress in ``ctx.state``. Run as a program::

    python -m engine._demo_workload start DB LOG RUN_ID DELAY
    python -m engine._demo_workload recover DB LOG DELAY

``start`` prints ``done <i> <name>`` once step ``i``'s completion is in the journal,
which is what the demo waits for before it kills the process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .context import Context, current_context
from .durable import durable
from .runtime import configure, default_engine
from .steps import step

NAME = "demo:order_pipeline"
LEASE_SECONDS = 0.6

ORDER: dict[str, Any] = {
    "id": "A-1042",
    "customer": "ada@example.org",
    "items": [
        {"sku": "notebook", "qty": 2, "price": 1250},
        {"sku": "desk-lamp", "qty": 1, "price": 4999},
    ],
    "coupon": "WELCOME10",
}

STEPS = (
    "validate",
    "reserve_stock",
    "price_items",
    "apply_discount",
    "compute_tax",
    "charge_card",
    "ship",
    "send_receipt",
)

ANNOUNCE = False
"""Print a line per step (the child processes do; the demo's own fork does not)."""


def _say(line: str) -> None:
    if ANNOUNCE:
        print(line, flush=True)


def _side_effect(i: int) -> None:
    """The step's real-world effect: one line in the log per execution."""
    ctx = current_context()
    with open(os.environ["DURABLE_DEMO_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{ctx.run_id} {i} {STEPS[i - 1]} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    _say(f"start {i} {STEPS[i - 1]}")
    time.sleep(float(os.environ.get("DURABLE_DEMO_DELAY", "0.15")))


@step
def validate(order: dict[str, Any]) -> int:
    _side_effect(1)
    state = current_context().state
    state["order_id"] = order["id"]
    state["discount_pct"] = 10 if order.get("coupon") == "WELCOME10" else 0
    return len(order["items"])


@step
def reserve_stock(order: dict[str, Any]) -> list[str]:
    _side_effect(2)
    reserved = [f"{item['sku']} x{item['qty']}" for item in order["items"]]
    current_context().state["reserved"] = reserved
    return reserved


@step
def price_items(order: dict[str, Any]) -> int:
    _side_effect(3)
    subtotal: int = sum(item["qty"] * item["price"] for item in order["items"])
    current_context().state["subtotal"] = subtotal
    return subtotal


@step
def apply_discount(subtotal: int, pct: int) -> int:
    _side_effect(4)
    discount = subtotal * pct // 100
    current_context().state["discount"] = discount
    return discount


@step
def compute_tax(net: int) -> int:
    _side_effect(5)
    tax = net * 20 // 100
    current_context().state["tax"] = tax
    return tax


@step
def charge_card(customer: str, amount: int) -> str:
    _side_effect(6)
    state = current_context().state
    payment = f"pay-{current_context().run_id[-6:]}-{amount}"
    state["charged"] = amount
    state["payment_id"] = payment
    return payment


@step
def ship(order_id: str) -> str:
    _side_effect(7)
    tracking = f"TRK-{order_id}-{current_context().run_id[-4:]}".upper()
    current_context().state["tracking"] = tracking
    return tracking


@step
def send_receipt(customer: str, amount: int, tracking: str) -> str:
    _side_effect(8)
    receipt = f"{customer}: charged {amount / 100:.2f} EUR, parcel {tracking}"
    current_context().state["receipt"] = receipt
    return receipt


@durable(name=NAME)
def order_pipeline(ctx: Context[Any], order: dict[str, Any]) -> dict[str, Any]:
    """Validate, reserve, price, discount, tax, charge, ship, receipt: every step keeps
    its result in ``ctx.state``, and later steps read what earlier ones left there."""

    def run(i: int, call: Any, *args: Any) -> Any:
        replayed = ctx.replaying
        result = call(*args)
        _say(f"{'replayed' if replayed else 'done'} {i} {STEPS[i - 1]}")
        return result

    run(1, validate, order)
    run(2, reserve_stock, order)
    run(3, price_items, order)
    run(4, apply_discount, ctx.state["subtotal"], ctx.state["discount_pct"])
    net = ctx.state["subtotal"] - ctx.state["discount"]
    run(5, compute_tax, net)
    total = net + ctx.state["tax"]
    run(6, charge_card, order["customer"], total)
    run(7, ship, order["id"])
    run(8, send_receipt, order["customer"], total, ctx.state["tracking"])
    return {"order": order["id"], "total": total, "tracking": ctx.state["tracking"]}


def _start(db: str, run_id: str) -> None:
    configure(db, lease_seconds=LEASE_SECONDS)
    result = order_pipeline.start(ORDER, run_id=run_id).result(timeout=60)
    print(f"result {json.dumps(result)}", flush=True)


def _recover(db: str) -> None:
    eng = configure(db, lease_seconds=LEASE_SECONDS)
    began = time.monotonic()
    while not eng.journal.claimable():  # the killed owner's lease has to run out first
        if time.monotonic() - began > 30:
            raise TimeoutError("no run became claimable within 30 s")
        time.sleep(0.02)
    print(f"lease expired after {time.monotonic() - began:.2f} s", flush=True)
    report = eng.recover(timeout=60)
    for handle in report.handles:
        print(f"recovered {handle.run_id} {json.dumps(handle.result())}", flush=True)
    for run_id, exc in report.errors.items():
        print(f"error {run_id} {exc}", flush=True)


def main(argv: list[str]) -> int:
    """``start DB LOG RUN_ID DELAY`` or ``recover DB LOG DELAY``."""
    global ANNOUNCE
    ANNOUNCE = True
    mode, db, log, *rest = argv
    os.environ["DURABLE_DEMO_LOG"] = log
    os.environ["DURABLE_DEMO_DELAY"] = rest[-1]
    print(f"pid {os.getpid()}", flush=True)
    try:
        if mode == "start":
            _start(db, rest[0])
        else:
            _recover(db)
    finally:
        default_engine().close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
