"""The public API type-checks as documented: every ```python block of README.md and
docs/ passes ``mypy --strict``, and tests/typing/expectations.py pins the types of
calls, handles and results (``assert_type``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(
    r"^(?P<skip><!-- mypy: skip[^>]*-->\n)?```python\n(?P<code>.*?)^```", re.M | re.S
)

# Blocks that do not pass, by file and 1-based block number (counting skipped ones),
# with the reason. Blocks that use the reader's own code (``myapp``, ``checkout``) are
# marked ``<!-- mypy: skip (reason) -->`` in the docs instead.
KNOWN_FAILURES: dict[tuple[str, int], str] = {
    ("docs/howto/state.md", 1): "imports httpx, which this project does not install",
}


def doc_blocks() -> list[tuple[str, int, str]]:
    """(file, block number, code) of every ```python block not marked ``mypy: skip``."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for number, match in enumerate(FENCE.finditer(path.read_text()), 1):
            if not match["skip"]:
                blocks.append((rel, number, match["code"]))
    return blocks


def _module_name(rel: str, number: int) -> str:
    return "doc_" + re.sub(r"\W", "_", rel.removesuffix(".md")).lower() + f"_{number}"


def _mypy(paths: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores",
         "--no-incremental", "--cache-dir", str(cwd / ".mypy_cache"),
         "--config-file", "", *map(str, paths)],
        check=False, capture_output=True, text=True, cwd=cwd, timeout=600,
    )  # fmt: skip


WRONG = (
    "from typing_extensions import assert_type\n"
    "from engine import Context, durable\n\n"
    "@durable\n"
    "def job(ctx: Context, n: int) -> int:\n"
    "    return n\n\n"
    "assert_type(job.start(1).result(), str)\n"
    "job('one')\n"
)
"""Calls the API must reject: proves the expectations can fail."""


@pytest.fixture(scope="module")
def checked(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, tuple[str, int]]]:
    """One mypy run (it costs tens of seconds) over every doc block (each its own
    module), the expectations file and ``wrong.py``; with the module name of each block."""
    tmp_path = tmp_path_factory.mktemp("typing")
    blocks = doc_blocks()
    assert len(blocks) >= 10, "the extraction found too few blocks"
    names: dict[str, tuple[str, int]] = {}
    paths = []
    for rel, number, code in blocks:
        name = _module_name(rel, number)
        names[name] = (rel, number)
        path = tmp_path / f"{name}.py"
        path.write_text(code)
        paths.append(path)
    expectations = tmp_path / "expectations.py"
    expectations.write_text((ROOT / "tests/typing/expectations.py").read_text())
    wrong = tmp_path / "wrong.py"
    wrong.write_text(WRONG)
    return _mypy([*paths, expectations, wrong], tmp_path), names


def test_doc_blocks_pass_mypy_strict(
    checked: tuple[subprocess.CompletedProcess[str], dict[str, tuple[str, int]]],
) -> None:
    """Every block and the expectations file pass: any error outside a known failure
    fails the test, and so does a known failure that passes now (the list must shrink
    as the docs are fixed)."""
    result, names = checked
    failing: dict[tuple[str, int], list[str]] = {}
    other: list[str] = []
    for line in result.stdout.splitlines():
        m = re.match(r"(?P<file>[^:]+)\.py:\d+: error:", line)
        if m is None or Path(m["file"]).name == "wrong":
            continue
        key = names.get(Path(m["file"]).name)
        if key is None:
            other.append(line)
        else:
            failing.setdefault(key, []).append(line)
    unexpected = {k: v for k, v in failing.items() if k not in KNOWN_FAILURES}
    fixed = [k for k in KNOWN_FAILURES if k not in failing]
    assert not other, "\n".join(other)
    assert not unexpected, "\n".join(line for lines in unexpected.values() for line in lines)
    assert not fixed, f"known failures that pass now: remove them from the list: {fixed}"
    # 1: errors were found (wrong.py's at least); 2 would be mypy failing to run.
    assert result.returncode == 1, result.stdout + result.stderr


def test_expectations_fail_when_types_are_lost(
    checked: tuple[subprocess.CompletedProcess[str], dict[str, tuple[str, int]]],
) -> None:
    """The expectations can fail: an ``assert_type`` the API does not meet is an error."""
    result, _ = checked
    wrong = [line for line in result.stdout.splitlines() if line.startswith("wrong.py:")]
    assert any('Expression is of type "int", not "str"' in line for line in wrong), wrong
    assert any('incompatible type "str"; expected "int"' in line for line in wrong), wrong


@pytest.mark.parametrize("rel", ["README.md", "docs/tutorial.md"])
def test_blocks_are_found(rel: str) -> None:
    """The extraction sees the blocks a reader sees."""
    text = (ROOT / rel).read_text()
    found = [b for b in doc_blocks() if b[0] == rel]
    assert len(found) + text.count("<!-- mypy: skip") == text.count("```python")
