"""The docs stay true to the code: every public name documented and in the reference."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
assert spec is not None and spec.loader is not None
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


class TestReference:
    """The generated reference matches the code."""

    @pytest.mark.parametrize("package", gen.PACKAGES)
    def test_every_public_name_has_a_docstring(self, package: str) -> None:
        """Classes and functions in __all__ carry a docstring."""
        missing = [
            name
            for name, obj in gen.public_names(package)
            if gen.is_documentable(obj) and not (inspect.getdoc(obj) or "").strip()
        ]
        assert missing == []

    @pytest.mark.parametrize("package", gen.PACKAGES)
    def test_every_public_name_is_in_the_reference(self, package: str) -> None:
        """Each name of __all__ appears in api.md or errors.md."""
        text = (ROOT / "docs/reference/api.md").read_text() + (
            ROOT / "docs/reference/errors.md"
        ).read_text()
        absent = [
            n
            for n, _ in gen.public_names(package)
            if f"`{n}" not in text and f"{package}.{n}" not in text
        ]
        assert absent == []

    def test_reference_is_up_to_date(self) -> None:
        """The committed reference equals what docs/gen_reference.py writes now."""
        assert (ROOT / "docs/reference/api.md").read_text() == gen.render_api(), (
            "run: python docs/gen_reference.py"
        )
        assert (ROOT / "docs/reference/errors.md").read_text() == gen.render_errors()


class TestLinks:
    """Relative links in the docs and README point at files that exist."""

    def test_relative_links_resolve(self) -> None:
        """Every [text](relative/path.md) target exists."""
        broken = []
        for page in [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]:
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
                if not (page.parent / target).exists():
                    broken.append(f"{page.relative_to(ROOT)} -> {target}")
        assert broken == []
