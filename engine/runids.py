"""A run id is an idempotency key: the same start attaches, another start is an error."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from journal import Journal, Run

from .errors import RunIdConflict, WrongFunction

__all__ = ["check_same_start"]


def check_same_start(
    journal: Journal,
    existing: Run,
    wanted: Run,
    fn: Callable[..., Any] | None = None,
    *,
    skip_ctx: bool = False,
) -> None:
    """Raise unless ``wanted`` (a run this call would have created) starts as ``existing``
    did: same function, same input. Reads only; the caller has written nothing.

    With ``fn`` (its first parameter skipped if ``skip_ctx``), arguments are compared
    as bound to its parameters, so ``f(1, b=2)`` and ``f(b=2, a=1)`` are the same start."""
    if existing.name != wanted.name:
        raise WrongFunction(
            f"run {existing.run_id!r} belongs to {existing.name!r}, not {wanted.name!r}",
            run_id=existing.run_id,
            expected=wanted.name,
            found=existing.name,
        )
    if existing.input == wanted.input and existing.codec == wanted.codec:
        return
    # Bytes can differ for equal inputs (keyword order, compression, another codec):
    # the decoded values decide.
    where = f"run {existing.run_id!r} input"
    before = journal.decode_run_value(existing, "input", strict=False)
    after = journal.decode(wanted.input, wanted.codec, where=where)
    before, after = _plain(before, fn, skip_ctx), _plain(after, fn, skip_ctx)
    if before == after:
        return
    differences = _differences(before, after)
    raise RunIdConflict(
        f"run {existing.run_id!r} of {existing.name!r} exists with other input "
        f"({', '.join(differences)}); start it with the same input to attach to it, "
        "or use another run id",
        run_id=existing.run_id,
        name=existing.name,
        differences=differences,
    )


def _plain(value: Any, fn: Callable[..., Any] | None, skip_ctx: bool) -> Any:
    # A workflow's input is its StartEvent: compared by its fields.
    if isinstance(value, BaseModel):
        return value.model_dump()
    if fn is None or not isinstance(value, dict) or set(value) != {"args", "kwargs"}:
        return value
    try:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if skip_ctx and params:
            signature = signature.replace(parameters=params[1:])
        bound = signature.bind(*value["args"], **value["kwargs"])
    except (TypeError, ValueError):
        return value  # does not bind (the code changed): compared as recorded
    bound.apply_defaults()
    return {"args": [], "kwargs": dict(bound.arguments)}


def _differences(before: Any, after: Any) -> list[str]:
    """What differs, briefly: positional arguments by index, keywords and fields by name."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return ["input"]
    out: list[str] = []
    if "args" in before and "args" in after and "kwargs" in before and "kwargs" in after:
        old_args, new_args = list(before["args"]), list(after["args"])
        if len(old_args) != len(new_args):
            out.append(f"{len(old_args)} positional arguments, now {len(new_args)}")
        else:
            out += [
                f"args[{i}]"
                for i, (a, b) in enumerate(zip(old_args, new_args, strict=True))
                if a != b
            ]
        before, after = before["kwargs"], after["kwargs"]
        if not (isinstance(before, dict) and isinstance(after, dict)):
            return out or ["input"]
    keys = sorted(set(before) | set(after), key=str)
    out += [str(k) for k in keys if before.get(k, _MISSING) != after.get(k, _MISSING)]
    return out or ["input"]


_MISSING = object()
