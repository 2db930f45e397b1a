"""How to install one of durable's extras into the running Python, for error messages.

``durable`` is installed from a checkout (``pip install -e PATH``), not from a package
index, so ``pip install 'durable[ui]'`` would look for a package that is not there: the
hint names the folder it was installed from (PEP 610's ``direct_url.json``), else the
checkout this code runs from, else the package by name.
"""

from __future__ import annotations

import json
import shlex
import sys
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path

__all__ = ["install_hint"]


def _source() -> tuple[str, bool] | None:
    """(folder, editable) this distribution was installed from, if a local folder."""
    try:
        raw = metadata.distribution("durable").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        raw = None
    if raw:
        try:
            info = json.loads(raw)
            url = urllib.parse.urlsplit(info["url"])
        except (ValueError, KeyError, TypeError):
            info, url = {}, None
        if url is not None and url.scheme == "file":
            editable = bool((info.get("dir_info") or {}).get("editable"))
            return urllib.request.url2pathname(url.path), editable
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return str(root), True
    return None


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (``ui``, ``postgres``) into this Python."""
    source = _source()
    if source is None:
        target, flag = f"durable[{extra}]", ""
    else:
        target, flag = f"{source[0]}[{extra}]", "-e " if source[1] else ""
    return f"{shlex.quote(sys.executable)} -m pip install {flag}{shlex.quote(target)}"
