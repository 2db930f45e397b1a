"""Resources injected into workflow steps: ``Annotated[T, Resource(factory, cache=)]``.

A step parameter annotated ``Annotated[Memory, Resource(get_memory)]`` gets what
``get_memory()`` returns (awaited when the factory is async). A factory's own parameters
may be resources too. ``cache=True`` (the default) makes one object per workflow
instance, shared by its steps and runs; ``cache=False`` a new one for each step
execution (shared within it: two parameters asking for it get the same object).
``ResourceConfig(config_file, path_selector=)`` loads a pydantic model from a JSON file.

Resources are never journaled: a recovered run gets them made again by its factories.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .errors import CircularResourceError, WorkflowConfigurationError

__all__ = [
    "Resource",
    "ResourceConfig",
    "ResourceDescriptor",
    "ResourceManager",
]


@runtime_checkable
class ResourceDescriptor(Protocol):
    """What ``Resource(...)`` and ``ResourceConfig(...)`` return: named, cached or not,
    resolved through a :class:`ResourceManager`."""

    @property
    def name(self) -> str:
        """The key the resource is cached under."""
        ...

    @property
    def cache(self) -> bool:
        """Whether one object is shared by every step of the workflow instance."""
        ...

    async def resolve(self, manager: ResourceManager) -> Any:
        """Make the resource."""
        ...

    def set_type_annotation(self, type_annotation: Any) -> None:
        """Learn the annotated type (the model a ResourceConfig loads)."""
        ...


def resource_parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """``(parameter, descriptor, annotated type)`` for each ``Annotated[T, descriptor]``
    parameter of ``fn``."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        return []
    out = []
    for param in inspect.signature(fn).parameters.values():
        ann = hints.get(param.name)
        if typing.get_origin(ann) is Annotated:
            base, *extras = typing.get_args(ann)
            for extra in extras:
                if isinstance(extra, ResourceDescriptor):
                    out.append((param.name, extra, base))
                    break
    return out


class _Resource:
    """A factory-made resource (``Resource(factory, cache=)``)."""

    def __init__(self, factory: Callable[..., Any], cache: bool) -> None:
        if not callable(factory):
            raise WorkflowConfigurationError(f"Resource() needs a callable, got {factory!r}")
        self._factory = factory
        self.name = getattr(factory, "__qualname__", type(factory).__name__)
        self.cache = cache

    async def resolve(self, manager: ResourceManager) -> Any:
        """Call the factory (its resource parameters resolved first); await it if async."""
        kwargs = {}
        for param, descriptor, base in resource_parameters(self._factory):
            descriptor.set_type_annotation(base)
            kwargs[param] = await manager.get(descriptor)
        value = self._factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def set_type_annotation(self, type_annotation: Any) -> None:
        """Nothing to learn: the factory says what it makes."""

    def __repr__(self) -> str:
        return f"Resource({self.name}, cache={self.cache})"


@functools.lru_cache(maxsize=128)
def _config_data(path: str, selector: str | None) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data: Any = json.load(f)
    where = ""
    for key in (selector or "").split(".") if selector else []:
        where = f"{where}.{key}" if where else key
        data = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            raise ValueError(
                f"Expected dictionary for configuration from {path} at path {where}, "
                f"got: {type(data)}"
            )
    if not isinstance(data, dict):
        raise ValueError(f"Expected dictionary for configuration from {path}, got {type(data)}")
    return data


class _ResourceConfig:
    """A pydantic model read from a JSON file (``ResourceConfig(...)``); always cached."""

    cache = True

    def __init__(
        self,
        config_file: str,
        path_selector: str | None = None,
        cls_factory: type[BaseModel] | None = None,
        label: str | None = None,
        description: str | None = None,
    ) -> None:
        if Path(config_file).suffix != ".json":
            raise ValueError("Only JSON files can be used to load Pydantic-based resources.")
        self.config_file = config_file
        self.path_selector = path_selector
        self.cls_factory = cls_factory
        self.label = label
        self.description = description

    @property
    def name(self) -> str:
        """The file, and the selector if any."""
        if self.path_selector is None:
            return self.config_file
        return f"{self.config_file}.{self.path_selector}"

    def call(self) -> BaseModel:
        """Read the file and validate the selected part into the model."""
        path = Path(self.config_file)
        if not path.is_file():
            raise FileNotFoundError(f"No such file: {self.config_file}")
        if self.cls_factory is None:
            raise ValueError("Class factory should be set to a BaseModel subclass before calling")
        data = _config_data(str(path.resolve()), self.path_selector)
        return self.cls_factory.model_validate(data)

    async def resolve(self, manager: ResourceManager) -> Any:
        """The loaded model."""
        return self.call()

    def set_type_annotation(self, type_annotation: Any) -> None:
        """The annotated type is the model to load, unless one was given."""
        if self.cls_factory is None and isinstance(type_annotation, type):
            self.cls_factory = type_annotation

    def __repr__(self) -> str:
        return f"ResourceConfig({self.name!r})"


def Resource(factory: Callable[..., Any | Awaitable[Any]], cache: bool = True) -> _Resource:
    """A resource for ``Annotated[T, Resource(factory)]`` step parameters."""
    return _Resource(factory, cache)


def ResourceConfig(
    config_file: str,
    path_selector: str | None = None,
    label: str | None = None,
    description: str | None = None,
) -> _ResourceConfig:
    """A pydantic model loaded from ``config_file`` (JSON; ``path_selector`` a dotted
    path into it), for ``Annotated[Model, ResourceConfig(...)]`` step parameters."""
    return _ResourceConfig(config_file, path_selector, label=label, description=description)


class ResourceManager:
    """Makes and caches a workflow instance's resources."""

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}
        self._resolving: list[str] = []
        self._scoped: dict[str, Any] | None = None

    @contextlib.contextmanager
    def resolution_scope(self) -> Iterator[None]:
        """One step execution's resolution: uncached resources are made once within it."""
        outer = self._scoped
        if outer is None:
            self._scoped = {}
        try:
            yield
        finally:
            if outer is None:
                self._scoped = None

    async def set(self, name: str, val: Any) -> None:
        """Store a resource under ``name`` (what cached resources are looked up by)."""
        self.resources[name] = val

    async def get(self, resource: ResourceDescriptor) -> Any:
        """The resource: cached, made in this scope already, or made now."""
        with self.resolution_scope():
            assert self._scoped is not None
            name = resource.name
            if name in self._resolving:
                chain = " -> ".join([*self._resolving, name])
                raise CircularResourceError(f"Circular resource dependency detected: {chain}")
            if resource.cache and name in self.resources:
                return self.resources[name]
            if name in self._scoped:
                return self._scoped[name]
            self._resolving.append(name)
            try:
                value = await resource.resolve(self)
            finally:
                self._resolving.remove(name)
            if resource.cache:
                self.resources[name] = value
            self._scoped[name] = value
            return value

    def get_all(self) -> dict[str, Any]:
        """The cached resources by name."""
        return self.resources
