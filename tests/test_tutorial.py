"""docs/tutorial.md followed literally: its files saved as it says, its shell commands
run as written (in a fresh folder, the venv's ``python`` and ``durable`` first on PATH,
as after its ``. .venv/bin/activate``), and what it says they print is what they print.

Slow: recovery waits for the crashed process's 30-second lease, as the tutorial says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")


def block_after(heading: str, lang: str) -> str:
    """The first ```lang block after ``heading``."""
    start = TUTORIAL.index(heading)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(TUTORIAL, start)
    assert match is not None, (heading, lang)
    return match[1]


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip


def test_install_step_starts_from_a_checkout() -> None:
    """Step 1 works where the reader is: the repository's folder, or any folder with
    the repository's path; and it activates the venv the later steps rely on."""
    install = block_after("## 1. Install", "bash")
    assert "pip install -e ." in install and ". .venv/bin/activate" in install
    assert "pip install -e PATH/TO/durable" in TUTORIAL
    assert (ROOT / "pyproject.toml").exists()


@pytest.mark.slow
def test_the_tutorial_as_written(tmp_path: Path) -> None:
    """Crash, recover (after the lease), then every look-back command of step 5."""
    (tmp_path / "orders.py").write_text(block_after("Save as `orders.py`", "python"))
    crash = shell(block_after("## 3. Crash it", "bash"), tmp_path)
    assert crash.returncode in (-9, 128 + 9), crash.stderr  # SIGKILLed (bash may exec it)
    assert crash.stdout.splitlines() == ["charging a: 10", "shipping a", "charging b: 10"]

    recover = shell(block_after("## 4. Recover it", "bash"), tmp_path)
    assert recover.returncode == 0, recover.stderr
    # charge(a), ship(a), charge(b) come from the journal; ship(b) runs again.
    assert recover.stdout.splitlines() == [
        "shipping b",
        "charging c: 10",
        "shipping c",
        "['parcel-a', 'parcel-b', 'parcel-c']",
    ]

    for line in block_after("## 5. Look back", "bash").splitlines():
        command = line.split("  #")[0].strip()
        result = shell(command, tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        if command.startswith("durable history"):
            assert "7 checkpoints, 6 steps completed" in result.stdout
        if command.startswith("durable state"):
            assert '"receipt": "receipt-a"' in result.stdout
        if command.startswith("durable fork"):
            assert "completed" in result.stdout
        if command.startswith("durable replay"):
            assert result.stdout.startswith("ok")


def test_workflow_section_runs(tmp_path: Path) -> None:
    """Step 6's workflow, saved as the tutorial says and run with ``python``."""
    (tmp_path / "essay.py").write_text(block_after("Save as `essay.py`", "python"))
    result = shell(block_after("and run it:", "bash"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ON TIDES"
