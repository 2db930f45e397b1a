"""Peers: the engines a user would pick instead, each in its own virtual environment.

Each peer is installed from PyPI at a pinned version into
``benchmarks/.peers/<name>/`` (gitignored) by ``python -m benchmarks
--install-peers``; nothing of theirs goes into the project's environment. A
measurement runs the peer's script from this folder (``<name>_peer.py``) with the
peer venv's python; the script prints one JSON line (``seconds``, ``ops``,
``extra``) as its last line of stdout. Peers whose venv is missing are skipped
(with a line saying so): ``--quick`` never needs the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".peers"


@dataclass(frozen=True)
class Peer:
    name: str  # venv folder name and script stem
    title: str  # for tables and docs
    requirements: tuple[str, ...]  # pinned
    distributions: tuple[str, ...]  # whose versions are recorded with the results

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}_peer.py"

    def installed(self) -> bool:
        return self.python.exists() and (self.venv / ".installed").exists()


# Versions pinned on 2026-11-29 (the latest on PyPI that day). Bump deliberately.
PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("dbos", "DBOS Transact (SQLite)", ("dbos==3.4.0",), ("dbos", "sqlalchemy")),
        Peer(
            "langgraph",
            "LangGraph (SqliteSaver)",
            ("langgraph==1.2.24", "langgraph-checkpoint-sqlite==3.1.2"),
            ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "aiosqlite"),
        ),
        Peer(
            "llamaindex",
            "LlamaIndex workflows (ctx.to_dict per step)",
            ("llama-index-workflows==2.26.1",),
            ("llama-index-workflows",),
        ),
        # LlamaIndex's durable runtime. 0.7.0 does not launch with DBOS 3.x (it builds
        # Queue objects, which DBOS 3 refuses): the last 2.x release, pinned.
        Peer(
            "llamadbos",
            "LlamaIndex workflows on DBOS (llama-agents-dbos)",
            ("llama-agents-dbos==0.7.0", "dbos==2.31.1"),
            ("llama-agents-dbos", "dbos", "llama-index-workflows"),
        ),
    )
}


def install(names: list[str] | None = None, log: TextIO = sys.stderr) -> dict[str, str | None]:
    """Create each peer's venv and pip-install its pinned requirements; name -> error or None."""
    out: dict[str, str | None] = {}
    for name in names or list(PEERS):
        peer = PEERS[name]
        print(f"installing peer {name}: {' '.join(peer.requirements)} -> {peer.venv}", file=log)
        try:
            if not peer.python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
            (peer.venv / ".installed").unlink(missing_ok=True)
            proc = subprocess.run(
                [str(peer.python), "-m", "pip", "install", "--quiet", *peer.requirements],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip()[-2000:])
            (peer.venv / ".installed").write_text(json.dumps(versions(peer)) + "\n")
            out[name] = None
            print(f"  ok: {versions(peer)}", file=log)
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {out[name]}", file=log)
    return out


def versions(peer: Peer) -> dict[str, str]:
    """Installed versions of the peer's distributions (and its python), read in its venv."""
    code = (
        "import json, platform, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {'python': platform.python_version()}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = version(d)\n"
        "    except PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(peer.python), "-c", code, *peer.distributions],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def status() -> dict[str, dict[str, Any]]:
    """For the results JSON: each peer's versions, or why it is not there."""
    out: dict[str, dict[str, Any]] = {}
    for name, peer in PEERS.items():
        if not peer.installed():
            out[name] = {"title": peer.title, "installed": False,
                         "requirements": list(peer.requirements)}  # fmt: skip
            continue
        try:
            out[name] = {"title": peer.title, "installed": True, "versions": versions(peer)}
        except (OSError, subprocess.CalledProcessError) as exc:
            out[name] = {"title": peer.title, "installed": False, "error": str(exc)}
    return out


def run_peer(name: str, scenario: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one peer measurement in its venv; return the JSON its script printed."""
    peer = PEERS[name]
    if not peer.installed():
        raise RuntimeError(f"peer {name} is not installed (python -m benchmarks --install-peers)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DBOS__CLOUD"] = "false"
    proc = subprocess.run(
        [str(peer.python), str(peer.script), scenario, json.dumps(params), str(workdir)],
        cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-15:]
        raise RuntimeError(f"peer {name} {scenario} exited {proc.returncode}:\n" + "\n".join(tail))
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
