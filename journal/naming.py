"""How a program run as a script names what it defines.

``python agent.py`` runs its code as module ``__main__``, a name no other process can
import. Classes, functions and workflows defined there are recorded under the module's
import name instead (``agent``: what ``durable worker --import agent`` imports), and
read back in the script from ``__main__``. Journals written before this carry
``__main__:X`` names: those resolve against the modules a worker was told to import.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = [
    "MAIN",
    "main_import_name",
    "main_module_for",
    "note_user_module",
    "recorded_module",
    "search_user_modules",
]

MAIN = "__main__"

_lock = threading.Lock()
_USER_MODULES: list[str] = []


@functools.lru_cache(maxsize=1)
def main_import_name() -> str | None:
    """The name ``__main__`` would be imported under, or None (``-c``, a REPL, a file
    that is not a ``.py`` module).

    ``python -m pkg.mod`` gives ``pkg.mod``; ``python dir/agent.py`` gives ``agent``,
    or ``pkg.agent`` when ``dir`` is a package (holds ``__init__.py``), walking up as
    far as the packages go: the name under which the worker, started in the directory
    above them, imports the file.
    """
    main = sys.modules.get(MAIN)
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name and name != MAIN:
        return name
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    path = os.path.realpath(file)
    directory, base = os.path.split(path[:-3])
    parts = [base]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        if not package:
            break
        parts.insert(0, package)
    if not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def recorded_module(module: str) -> str:
    """The module name to record for something defined in ``module``."""
    if module == MAIN:
        return main_import_name() or MAIN
    return module


def main_module_for(module: str) -> ModuleType | None:
    """``__main__`` if ``module`` is the name this process records it under, else None."""
    if module != MAIN and module == main_import_name():
        return sys.modules.get(MAIN)
    return None


def note_user_module(name: str) -> None:
    """Remember a module imported on the user's request (``--import``): old ``__main__:X``
    names are looked up in these."""
    with _lock:
        if name not in _USER_MODULES:
            _USER_MODULES.append(name)


def search_user_modules(qualname: str) -> Any:
    """The object at ``qualname`` in the first user module that has it, or None."""
    with _lock:
        names = list(_USER_MODULES)
    for name in names:
        obj: Any = sys.modules.get(name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None
