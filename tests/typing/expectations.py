"""Typing expectations checked by ``mypy --strict`` (tests/test_typing.py); never imported."""

from __future__ import annotations

from pydantic import BaseModel
from typing_extensions import assert_type

from engine import Context, RunHandle, durable


class Cart(BaseModel):
    items: int = 0


@durable
def job(ctx: Context, n: int, *, label: str = "") -> int:
    return n


@durable(name="typing:typed_state")
def typed_state(ctx: Context[Cart], n: int) -> str:
    return str(ctx.state.items + n)


@durable
def plain(n: int) -> list[int]:
    return [n]


@durable
async def ajob(ctx: Context, n: int) -> int:
    return n


assert_type(job(1), int)
assert_type(job(1, label="x"), int)
assert_type(job.run(1), int)
assert_type(job.run(1, run_id="r"), int)
assert_type(job.start(1), RunHandle[int])
assert_type(job.start(1).result(), int)
assert_type(job.start(1, run_id="r").result(timeout=5), int)
assert_type(job.enqueue(1).result(), int)
assert_type(job.enqueue(1, run_id="r", priority=3).result(), int)
assert_type(typed_state(2), str)
assert_type(plain(1), list[int])
assert_type(plain.start(1).result(), list[int])
assert_type(ajob.start(1).result(), int)
assert_type(ajob.enqueue(1, run_id="a").result(), int)


async def awaited() -> None:
    assert_type(await ajob(1), int)
    assert_type(await ajob.run(1, run_id="a"), int)


def context_annotations(ctx: Context, typed: Context[Cart]) -> None:
    assert_type(ctx.run_id, str)
    assert_type(typed.run_id, str)


job("one")  # type: ignore[arg-type]
job(1, lable="x")  # type: ignore[call-arg]
job.start("one")  # type: ignore[call-overload]
plain.start()  # type: ignore[call-overload]
assert_type(job.enqueue(1, queue="q").result(), int)
assert_type(ajob.enqueue(1, priority=2).result(), int)
job.enqueue("one")  # type: ignore[call-overload]
