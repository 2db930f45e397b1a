"""Generate docs/reference/api.md and docs/reference/errors.md from the code.

Run ``python docs/gen_reference.py`` after changing the public API;
``tests/test_docs.py`` fails when the committed files differ from what this writes.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGES = ("engine", "journal")


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _parts(cls: type) -> list[type]:
    """``cls`` and the bases it is assembled from in private modules (the Journal facade's
    parts), whose public methods are the class's own."""
    private = [
        base
        for base in cls.__mro__[1:]
        if base.__module__.rpartition(".")[2].startswith("_") and base.__module__ != "builtins"
    ]
    return [cls, *private]


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    seen: set[str] = set()
    items = [item for part in _parts(cls) for item in vars(part).items()]
    for name, value in items:
        if name.startswith("_") or name in ("model_config", "model_fields") or name in seen:
            continue
        seen.add(name)
        if isinstance(value, property) or inspect.isfunction(value):
            out.append((name, value))
        elif isinstance(value, classmethod | staticmethod):
            out.append((name, value.__func__))
    return out


def _value(value: Any) -> str:
    if isinstance(value, frozenset | set):
        return "{" + ", ".join(repr(v) for v in sorted(value)) + "}"
    return repr(value)


def public_names(package: str) -> list[tuple[str, Any]]:
    """``(name, object)`` for every name in the package's ``__all__``."""
    module = __import__(package)
    return [(name, getattr(module, name)) for name in module.__all__ if name != "__version__"]


def is_documentable(obj: Any) -> bool:
    """Classes and functions carry docstrings; constants and type aliases do not."""
    return inspect.isclass(obj) or inspect.isfunction(obj)


def render_api() -> str:
    """The API reference, as Markdown."""
    lines = [
        "# Python API reference",
        "",
        "Generated from the code by `python docs/gen_reference.py`; do not edit by hand.",
        "",
    ]
    for package in PACKAGES:
        lines += [
            f"## `{package}`",
            "",
            _first_paragraph(sys.modules.get(package) or __import__(package)),
            "",
        ]
        constants = []
        for name, obj in public_names(package):
            if isinstance(obj, type) and issubclass(obj, BaseException):
                continue  # listed in errors.md
            if not is_documentable(obj):
                constants.append(name)
                continue
            kind = "class" if inspect.isclass(obj) else "function"
            lines += [f"### `{package}.{name}`", "", f"*{kind}* `{name}{_signature(obj)}`", ""]
            lines += [inspect.getdoc(obj) or "", ""]
            if inspect.isclass(obj):
                for member, value in _members(obj):
                    target = value.fget if isinstance(value, property) else value
                    sig = "" if isinstance(value, property) else _signature(value)
                    lines.append(f"- `{member}{sig}`: {_first_paragraph(target)}")
                lines.append("")
        if constants:
            lines += ["### Constants and aliases", ""]
            module = __import__(package)
            lines += [
                f"- `{package}.{name}` = `{_value(getattr(module, name))}`" for name in constants
            ]
            lines.append("")
    lines += ["See also [errors](errors.md).", ""]
    return "\n".join(lines)


def render_errors() -> str:
    """The error reference, as Markdown."""
    lines = [
        "# Errors",
        "",
        "Generated from the code by `python docs/gen_reference.py`; do not edit by hand.",
        "Every error of a package derives from its base class; catch that to catch all.",
        "",
    ]
    for package in PACKAGES:
        module = __import__(package)
        errors = [
            (name, obj)
            for name, obj in public_names(package)
            if isinstance(obj, type) and issubclass(obj, BaseException)
        ]
        lines += [f"## `{package}`", ""]
        for name, obj in errors:
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            lines.append(f"- **`{name}`** ({bases}): {_first_paragraph(obj)}")
        lines.append("")
        tree = inspect.getdoc(sys.modules[f"{package}.errors"]) or ""
        if "::" in tree:
            lines += ["```", tree.split("::", 1)[1].strip("\n"), "```", ""]
        del module
    lines += [
        "The command line maps errors to exit codes: 0 ok, 1 a check failed (a divergence,",
        "a problem found by `verify`), 2 bad usage or bad input, with a one-line message.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Write both files."""
    (HERE / "reference").mkdir(exist_ok=True)
    (HERE / "reference" / "api.md").write_text(render_api())
    (HERE / "reference" / "errors.md").write_text(render_errors())


if __name__ == "__main__":
    main()
