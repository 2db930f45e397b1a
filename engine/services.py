"""Workflows injected into the steps of another (LlamaIndex's ``ServiceManager``).

``parent.add_workflows(name=ChildWorkflow())`` makes the child available to every step
with a parameter ``name`` annotated with a Workflow class. A run the step starts with
``await name.run(...)`` is journaled as a child run of the step's run: a parent
recovered after a crash attaches to the child it had started (which resumes where it
was) instead of starting another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ServiceNotFoundError

if TYPE_CHECKING:
    from .workflow import Workflow

__all__ = ["ServiceManager"]


class ServiceManager:
    """The workflows added to a workflow, by name."""

    def __init__(self) -> None:
        self._services: dict[str, Workflow] = {}

    def get(self, name: str, default: Workflow | None = None) -> Workflow:
        """The workflow added as ``name`` (else ``default``, else ServiceNotFoundError)."""
        try:
            return self._services[name]
        except KeyError:
            if default is not None:
                return default
            raise ServiceNotFoundError(f"Service {name} not found") from None

    def add(self, name: str, service: Workflow) -> None:
        """Add ``service`` under ``name``."""
        self._services[name] = service

    def names(self) -> list[str]:
        """The names workflows were added under."""
        return list(self._services)

    def __contains__(self, name: Any) -> bool:
        return name in self._services
