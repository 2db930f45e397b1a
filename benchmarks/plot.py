"""``python -m benchmarks.plot [RESULTS.json] [-o PNG]``: the figure of docs/performance.md.

Left: bytes a run adds to its database as it grows by one 200-byte item per step
(``peers.growth``, last round, every contender). Right: recovery time (a fresh
process until the crashed run is done) against the number of steps to replay
(``recovery.looping``, median over rounds). Needs matplotlib (``pip install -e
'.[bench]'``); it is not a dependency of the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "performance.png"


def latest() -> Path:
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        raise SystemExit(f"no results in {RESULTS}: run python -m benchmarks first")
    return files[-1]


def _growth(ax: Any, sc: dict[str, Any]) -> None:
    for name, c in sc["contenders"].items():
        extra = c["rounds"][-1]["extra"]
        pts = extra.get("bytes_at") or []
        if not pts:
            continue
        base = pts[0][1]
        xs = [p[0] for p in pts]
        ys = [(p[1] - base) / 1024 for p in pts]
        note = extra.get("durability_note", "")
        style = "-" if name.startswith(("durable", "workflow")) else "--"
        ax.plot(xs, ys, style, marker=".", label=f"{name} ({note})" if note else name)
    ax.set_xlabel("steps done (each adds a 200-byte item to the state)")
    ax.set_ylabel("KiB added to the database")
    ax.set_title("Growing state: bytes on disk vs steps")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _recovery(ax: Any, sc: dict[str, Any]) -> None:
    xs, ys, lo, hi = [], [], [], []
    for c in sc["contenders"].values():
        rounds = c["rounds"]
        steps = rounds[0]["extra"]["steps"]
        secs = [r["seconds"] for r in rounds]
        xs.append(steps)
        ys.append(statistics.median(secs))
        lo.append(min(secs))
        hi.append(max(secs))
    order = sorted(range(len(xs)), key=xs.__getitem__)
    xs, ys = [xs[i] for i in order], [ys[i] for i in order]
    err = [[ys[k] - lo[order[k]] for k in range(len(xs))],
           [hi[order[k]] - ys[k] for k in range(len(xs))]]  # fmt: skip
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label="durable (median, min..max)")
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(f"{y:.2f} s", (x, y), textcoords="offset points", xytext=(6, -12))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("completed steps before the crash (replayed on recovery)")
    ax.set_ylabel("fresh process → run done (s)")
    ax.set_title("Recovery time vs steps to replay")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    p.add_argument("results", nargs="?", type=Path, help="results JSON (default: the latest)")
    p.add_argument("-o", "--out", type=Path, default=DEFAULT_PNG, help=f"PNG ({DEFAULT_PNG})")
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is needed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    path = args.results or latest()
    scenarios = json.loads(path.read_text())["scenarios"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    if "peers.growth" in scenarios:
        _growth(left, scenarios["peers.growth"])
    else:
        left.text(0.5, 0.5, "no peers.growth in " + path.name, ha="center")
    if "recovery.looping" in scenarios:
        _recovery(right, scenarios["recovery.looping"])
    else:
        right.text(0.5, 0.5, "no recovery.looping in " + path.name, ha="center")
    fig.suptitle(f"durable benchmarks, {path.stem}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
