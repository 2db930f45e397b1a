"""One error tree per package, pinned: every engine error is defined in ``engine/errors.py``
under ``EngineError``, drawn in its docstring and exported from ``engine``; every journal
error derives from ``journal.errors.JournalError``.

The classes are found by importing every module of the package, not from a list, so a new
error defined elsewhere fails here with its module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import click
import pytest

import engine
import journal
from engine import errors
from journal.errors import JournalError

NOT_ERRORS = {
    "engine.execution.ContinueAsNew": "a signal: ends a run's body to continue as a new run",
    "engine.execution.ReplayStop": "a signal: stops a replay at its target step",
    "engine.testing.SimulatedCrash": "a signal: the crash kit's simulated process death",
    "engine.registry.UnrecoverableDefinition": "a warning, not an error",
    "engine.cli._base.Failure": "click's exception: how the CLI exits with status 2",
    "engine.cli._base.CheckFailed": "click's exception: how the CLI exits with status 1",
    "engine.demo.DemoFailed": "the demo workload's own user-code failure, retried as any",
}
"""Exception classes under ``engine/`` that are deliberately not engine errors, and why
(each is named in ``engine/errors.py``'s docstring too)."""


def _modules(package: ModuleType) -> list[ModuleType]:
    names = [package.__name__] + [
        m.name
        for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        if not m.name.endswith("__main__")
    ]
    return [importlib.import_module(name) for name in names]


def _defined(package: ModuleType) -> list[tuple[str, type[BaseException]]]:
    """``(module.Name, class)`` of every exception class a module of ``package`` defines."""
    return [
        (f"{module.__name__}.{name}", obj)
        for module in _modules(package)
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]


ENGINE_CLASSES = _defined(engine)
ENGINE_ERRORS = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize(("where", "cls"), ENGINE_CLASSES, ids=[w for w, _ in ENGINE_CLASSES])
def test_every_engine_exception_lives_in_errors(where: str, cls: type[BaseException]) -> None:
    """A public exception class defined under engine/ is defined in engine/errors.py,
    or is one of the documented non-errors; a private one (``_Name``) is a module's own
    signal and is exported nowhere."""
    name = where.rpartition(".")[2]
    if name.startswith("_"):
        assert name not in engine.__all__
        return
    if where in NOT_ERRORS:
        assert not issubclass(cls, errors.EngineError), where
        assert name in (errors.__doc__ or ""), f"{name} is not named in engine/errors.py"
        return
    assert cls.__module__ == "engine.errors", f"{where}: move it to engine/errors.py"


def test_the_non_errors_are_what_they_claim() -> None:
    """Signals escape ``except Exception``; the warning is a Warning; the CLI's are click's."""
    found = dict(ENGINE_CLASSES)
    assert set(NOT_ERRORS) <= set(found), set(NOT_ERRORS) - set(found)
    for where in ("ContinueAsNew", "ReplayStop", "SimulatedCrash"):
        (cls,) = [c for w, c in found.items() if w.endswith(f".{where}")]
        assert not issubclass(cls, Exception), where
    assert issubclass(found["engine.registry.UnrecoverableDefinition"], Warning)
    assert issubclass(found["engine.cli._base.CheckFailed"], click.ClickException)
    assert issubclass(found["engine.demo.DemoFailed"], Exception)


@pytest.mark.parametrize("cls", ENGINE_ERRORS, ids=errors.__all__)
def test_every_engine_error_is_in_the_tree_and_exported(cls: type[BaseException]) -> None:
    """Each error of engine/errors.py derives from EngineError, is drawn in the module's
    docstring and is exported from ``engine`` (in ``__all__``, the same object)."""
    name = next(n for n in errors.__all__ if getattr(errors, n) is cls)
    assert issubclass(cls, errors.EngineError)
    doc = errors.__doc__ or ""
    assert f" {cls.__name__} " in doc or f" {cls.__name__}\n" in doc, f"{name} not drawn"
    assert name in engine.__all__ and getattr(engine, name) is cls


def test_errors_defines_every_error_it_exports() -> None:
    """Nothing in engine/errors.py is left out of its ``__all__``."""
    defined = {
        n
        for n, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
        if obj.__module__ == errors.__name__
    }
    assert defined <= set(errors.__all__), defined - set(errors.__all__)
    assert sorted(errors.__all__) == errors.__all__


def test_old_import_paths_still_work() -> None:
    """Errors that moved into engine/errors.py import from their former modules too."""
    from engine.testing import CrashSafetyError
    from engine.timetravel import StepNotFound
    from engine.ui.app import BadToken, BodyTooLarge, ReadOnly, UnsupportedMedia
    from engine.ui.views import BadRequest
    from engine.workflow import RunFinished
    from engine.workflow_run import (
        NoStepForEvent,
        WaitTimeout,
        WorkflowTimeout,
        WorkflowTimeoutError,
    )

    moved = [
        CrashSafetyError, StepNotFound, BadToken, BodyTooLarge, ReadOnly, UnsupportedMedia,
        BadRequest, RunFinished, NoStepForEvent, WaitTimeout, WorkflowTimeout,
        WorkflowTimeoutError,
    ]  # fmt: skip
    assert all(getattr(errors, cls.__name__) is cls for cls in moved)


def test_compatible_names_keep_the_bases_callers_catch() -> None:
    """LlamaIndex's names and the built-in bases a caller may catch instead."""
    expected: dict[type[BaseException], type[BaseException]] = {
        errors.WorkflowValidationError: TypeError,
        errors.WorkflowRuntimeError: RuntimeError,
        errors.WorkflowTimeoutError: TimeoutError,
        errors.WorkflowStepDoesNotExistError: KeyError,
        errors.ContextStateError: RuntimeError,
        errors.ContextSerdeError: ValueError,
        errors.WaitTimeout: TimeoutError,
        errors.ResultTimeout: TimeoutError,
        errors.StepNotFound: LookupError,
        errors.BadRequest: ValueError,
        errors.BadToken: ValueError,
        errors.BadSchedule: ValueError,
        errors.NotInRun: RuntimeError,
        errors.CrashSafetyError: AssertionError,
    }
    wrong = [cls.__name__ for cls, base in expected.items() if not issubclass(cls, base)]
    assert wrong == []
    assert errors.WorkflowTimeout is errors.WorkflowTimeoutError


JOURNAL_CLASSES = _defined(journal)


@pytest.mark.parametrize(("where", "cls"), JOURNAL_CLASSES, ids=[w for w, _ in JOURNAL_CLASSES])
def test_every_journal_error_is_a_journal_error(where: str, cls: type[BaseException]) -> None:
    """A public exception class defined under journal/ derives from JournalError (a
    private one is a module's own signal, caught where it is raised)."""
    if where.rpartition(".")[2].startswith("_"):
        return
    assert issubclass(cls, JournalError), where
