"""Finding durable functions and workflows by the name recorded in a run."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any

from journal.naming import (
    MAIN,
    main_module_for,
    note_user_module,
    recorded_module,
    search_user_modules,
)

from .errors import FunctionNotFound

__all__ = ["UnrecoverableDefinition", "qualified_name", "register", "resolve"]

_REGISTRY: dict[str, Any] = {}


class UnrecoverableDefinition(UserWarning):
    """A durable function or workflow no other process can import: defined inside a
    function, its runs cannot be recovered by a worker or ``durable recover``."""


def qualified_name(obj: Any) -> str:
    """``module:qualname``: how a run records what it executes. A script's definitions
    are recorded under its import name (``agent:Flow`` for ``python agent.py``), so a
    worker that imports it finds them."""
    return f"{recorded_module(obj.__module__)}:{obj.__qualname__}"


def warn_if_local(obj: Any, what: str, *, stacklevel: int = 3) -> None:
    """Warn when ``obj`` (given no ``name=``) is defined inside a function: a worker could
    never import it to resume its runs."""
    if "<locals>" in getattr(obj, "__qualname__", ""):
        warnings.warn(
            f"{what} {obj.__qualname__!r} is defined inside a function: a worker or "
            "`durable recover` cannot import it, so its runs cannot resume after a crash "
            "in another process. Define it at module level (or give it name= and make "
            "sure every recovering process runs the code that defines it)",
            UnrecoverableDefinition,
            stacklevel=stacklevel,
        )


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
            note_user_module(name)
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
    if module_name == MAIN:
        # Recorded by a script before scripts were recorded under their import name:
        # the modules the user asked to import (--import) may define it.
        candidate = search_user_modules(qualname)
        if candidate is not None and any(v is candidate for v in _REGISTRY.values()):
            return candidate
    where = f" (run {run_id!r})" if run_id else ""
    try:
        obj: Any = main_module_for(module_name) or importlib.import_module(module_name)
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
