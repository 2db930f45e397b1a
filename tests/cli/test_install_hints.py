"""Install hints work from a checkout: ``durable`` is not on a package index, so a
missing extra names the folder it was installed from, for the Python that runs it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from _children import REPO

from journal import Journal
from journal._extras import install_hint

ROOT = REPO


def test_hint_names_this_python_and_this_checkout() -> None:
    """``PYTHON -m pip install -e 'CHECKOUT[extra]'``, each part real: this interpreter,
    this repository (whose pyproject defines the extra)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ("ui", "postgres"):
        words = shlex.split(install_hint(extra))
        assert words[:4] == [sys.executable, "-m", "pip", "install"]
        target = words[-1]
        assert target.endswith(f"[{extra}]") and f"\n{extra} = [" in pyproject
        assert Path(target.removesuffix(f"[{extra}]")).resolve() == ROOT
        assert "durable[" not in target  # not a package index name


def test_cli_ui_without_the_extra_prints_the_hint(tmp_path: Path) -> None:
    """``durable ui`` without Starlette/Jinja2: one line, exit 2, the working command."""
    code = (
        "import sys\n"
        "sys.modules['jinja2'] = None  # as if the ui extra were not installed\n"
        "from engine.cli import main\n"
        "main(['--db', sys.argv[1], 'ui'])\n"
    )
    Journal(tmp_path / "j.db").close()
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "j.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert install_hint("ui") in lines[0]
    assert "'durable[ui]'" not in lines[0]
