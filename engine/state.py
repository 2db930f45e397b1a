"""The journaled state of a run: a dict-like view, or a typed pydantic view."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

if TYPE_CHECKING:
    from .execution import RunExecution

__all__ = ["State", "TypedState"]


class State(MutableMapping[str, Any]):
    """``ctx.state``: every assignment and deletion is a journal entry.

    Assign to record a change (``state["items"] = items + [x]``): changing a
    nested value in place is not seen by the journal.
    """

    __slots__ = ("_ex",)

    def __init__(self, execution: RunExecution) -> None:
        self._ex = execution

    def __getitem__(self, key: str) -> Any:
        return self._ex.values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._ex.set_value(key, value)

    def __delitem__(self, key: str) -> None:
        self._ex.delete_value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ex.values))

    def __len__(self) -> int:
        return len(self._ex.values)

    def __repr__(self) -> str:
        return f"State({self._ex.values!r})"

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the current values."""
        return dict(self._ex.values)


class TypedState:
    """``ctx.state`` for ``Context[MyModel]``: attribute assignment is validated by
    the model's field type and journaled under the field's name (``Field(exclude=True)``
    fields are not journaled: they come back with their default after a recovery)."""

    __slots__ = ("_adapters", "_ex", "_model")

    def __init__(self, execution: RunExecution, model: type[BaseModel]) -> None:
        object.__setattr__(self, "_ex", execution)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_adapters", {})

    def __getattr__(self, name: str) -> Any:
        values = self._ex.values
        if name in values:
            return values[name]
        field = self._model.model_fields.get(name)
        if field is None:
            raise AttributeError(f"{self._model.__name__} has no field {name!r}")
        # Defaults are not journaled: replay recreates them identically.
        value = field.get_default(call_default_factory=True, validated_data={})
        values[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        field = self._model.model_fields.get(name)
        if field is None:
            raise AttributeError(f"{self._model.__name__} has no field {name!r}")
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = TypeAdapter(field.annotation)
        valid = adapter.validate_python(value)
        if field.exclude:
            # A cache: held for this execution only, never journaled; after a recovery
            # it starts again from its default (as a workflow's state does).
            self._ex.values[name] = valid
            return
        self._ex.set_value(name, valid)

    def model(self) -> BaseModel:
        """The state as an instance of its model."""
        data = {name: getattr(self, name) for name in self._model.model_fields}
        model: BaseModel = self._model.model_validate(data)
        return model

    def __repr__(self) -> str:
        return f"TypedState({self.model()!r})"
