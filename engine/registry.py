"""Finding durable functions and workflows by the name recorded in a run."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .errors import FunctionNotFound

_REGISTRY: dict[str, Any] = {}


def qualified_name(obj: Any) -> str:
    """``module:qualname``: how a run records what it executes."""
    return f"{obj.__module__}:{obj.__qualname__}"


def register(name: str, target: Any) -> None:
    """Make ``target`` findable by ``name`` in this process (done by the decorators)."""
    _REGISTRY[name] = target


def import_user_modules(names: Sequence[str]) -> None:
    """Import the user's modules so that their durable functions and workflows register;
    the working directory is importable. Raises ImportError naming the module."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"cannot import {name!r}: {exc}") from exc
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise ImportError(
                f"importing {name!r} raised {type(exc).__name__}: {exc} "
                f"({frame.filename}:{frame.lineno})"
            ) from exc


def resolve(name: str, *, run_id: str | None = None, doing: str = "recovering") -> Any:
    """The durable function or workflow recorded as ``name``: registry first, then import.
    ``doing`` names what needs it in the error (recovering, forking, replaying)."""
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    module_name, _, qualname = name.partition(":")
    where = f" (run {run_id!r})" if run_id else ""
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FunctionNotFound(
            f"cannot import {name!r}{where}: {exc}. Import the module that defines it "
            f"before {doing} (on the command line: --import MODULE), or keep the old name "
            "importable",
            name=name,
            run_id=run_id,
        ) from exc
    found = _REGISTRY.get(name)
    if found is None:
        raise FunctionNotFound(
            f"{name!r}{where} imports but is not a @durable function or Workflow",
            name=name,
            run_id=run_id,
        )
    return found
