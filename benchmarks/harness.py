"""The benchmark harness: interleaved rounds, one process and one fresh directory per measurement.

A scenario has contenders that do the same work different ways, and names one
of them as the reference. Every round runs each contender once, in order
(A B A B ...), so slow drift of the machine (thermal, page cache, other load)
hits all contenders alike; each contender's ratio to the reference is taken
within the round, then summarised as median/min/max over the rounds.

Each measurement runs in a child process (``python -m benchmarks.harness
TARGET PARAMS WORKDIR``) so that its peak RSS is its own and no state (imports,
caches, open files) leaks from one contender into the next.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sample:
    """What a contender function returns: the timed part took ``seconds`` for ``ops`` operations."""

    seconds: float
    ops: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contender:
    """``target`` is ``"module:function"``, called in the child as ``fn(workdir, **params)``."""

    name: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    checked: bool = True  # is the scenario's target checked against this one's ratio?
    # optional: a failure is recorded (its error shown in the table) and the
    # contender dropped from later rounds, instead of stopping the whole run.
    optional: bool = False


@dataclass(frozen=True)
class Derived:
    """A figure computed per round from every contender's sample of that round.

    ``fn`` gets ``{contender name: sample}`` (each sample as the child returned it,
    plus ``rate`` and ``ratio``) and returns one number; it is summarised over the
    rounds like the ratios, and ``target`` is checked against the median.
    """

    name: str
    fn: Callable[[dict[str, dict[str, Any]]], float]
    unit: str = ""
    target: tuple[str, float] | None = None


@dataclass(frozen=True)
class Scenario:
    """Contenders compared against ``reference``, round by round.

    ``ratio="rate"`` reports contender ops/s ÷ reference ops/s (higher is better);
    ``ratio="cost"`` reports contender s/op ÷ reference s/op (lower is better).
    ``target`` is checked against the median ratio of each non-reference contender
    marked ``checked``.
    """

    name: str  # "family.variant"; --only matches the name, the family, or a glob
    description: str
    unit: str  # what one op is, e.g. "commits"
    contenders: tuple[Contender, ...]
    reference: str
    ratio: str = "rate"
    target: tuple[str, float] | None = None  # (">=", 0.7) or ("<=", 2.0)
    derived: tuple[Derived, ...] = ()  # figures across contenders (overheads, RSS ratios...)
    # Contenders left out before the run, with the reason (shown in the table).
    skipped: tuple[tuple[str, str], ...] = ()
    max_rounds: int | None = None  # at most this many rounds (slow contenders in a smoke run)

    def matches(self, pattern: str) -> bool:
        return (
            pattern == self.name
            or self.name.startswith(pattern + ".")
            or fnmatch.fnmatchcase(self.name, pattern)
        )


# -- the child side -------------------------------------------------------------------


def _maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def _child(argv: list[str]) -> None:
    target, params, workdir = argv
    module, _, name = target.partition(":")
    func = getattr(importlib.import_module(module), name)
    sample: Sample = func(Path(workdir), **json.loads(params))
    result = {
        "seconds": sample.seconds,
        "ops": sample.ops,
        "extra": sample.extra,
        # A contender that does its work in a subprocess reports that one's peak.
        "maxrss_kib": sample.extra.get("maxrss_kib", _maxrss_kib()),
    }
    # Last line of stdout is the result; anything the contender printed comes before it.
    print(json.dumps(result), flush=True)


# -- the parent side ------------------------------------------------------------------


def measure(contender: Contender, tmp_root: str | None) -> dict[str, Any]:
    """Run one contender once, in a child process and a fresh temporary directory."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in contender.name)
    workdir = tempfile.mkdtemp(prefix=f"bench-{safe}-", dir=tmp_root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.harness", contender.target,
             json.dumps(contender.params), workdir],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"contender {contender.name!r} failed (exit {proc.returncode}):\n{proc.stderr}"
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _meets(target: tuple[str, float] | None, value: float) -> bool | None:
    if target is None:
        return None
    op, bound = target
    return value >= bound if op == ">=" else value <= bound


def run_scenario(
    scenario: Scenario, *, rounds: int, tmp_root: str | None, log: TextIO = sys.stderr
) -> dict[str, Any]:
    """Run ``rounds`` interleaved rounds; return per-round samples and their summary."""
    per: dict[str, list[dict[str, Any]]] = {c.name: [] for c in scenario.contenders}
    derived: dict[str, list[float]] = {d.name: [] for d in scenario.derived}
    failed: dict[str, str] = {}
    rounds = min(rounds, scenario.max_rounds or rounds)
    for r in range(rounds):
        print(f"  {scenario.name}: round {r + 1}/{rounds}", file=log, flush=True)
        for contender in scenario.contenders:
            if contender.name in failed:
                continue
            try:
                sample = measure(contender, tmp_root)
            except Exception as exc:
                if not contender.optional or contender.name == scenario.reference:
                    raise
                failed[contender.name] = str(exc).strip()
                print(f"  {contender.name} FAILED (dropped): {exc}", file=log, flush=True)
                del per[contender.name]
                continue
            sample["rate"] = sample["ops"] / sample["seconds"]
            per[contender.name].append(sample)
        ref = per[scenario.reference][-1]["rate"]
        for samples in per.values():
            rate = samples[-1]["rate"]
            samples[-1]["ratio"] = rate / ref if scenario.ratio == "rate" else ref / rate
        this_round = {name: samples[-1] for name, samples in per.items()}
        for d in scenario.derived:
            with contextlib.suppress(KeyError):  # a figure of a contender that failed
                derived[d.name].append(d.fn(this_round))
    contenders = {}
    checked = {c.name for c in scenario.contenders if c.checked and c.name != scenario.reference}
    for name, samples in per.items():
        ratio = _stats([s["ratio"] for s in samples])
        met = _meets(scenario.target, ratio["median"]) if name in checked else None
        contenders[name] = {
            "rate": _stats([s["rate"] for s in samples]),
            "ratio": ratio,
            "peak_rss_kib": max(s["maxrss_kib"] for s in samples),
            "target_met": met,
            "rounds": samples,
        }
    out_of_run = {name: {"error": err} for name, err in failed.items()}
    out_of_run.update({name: {"skipped": why} for name, why in scenario.skipped})
    return {
        "description": scenario.description,
        "unit": scenario.unit,
        "reference": scenario.reference,
        "ratio": scenario.ratio,
        "target": list(scenario.target) if scenario.target else None,
        "contenders": contenders,
        "derived": {
            d.name: {
                **_stats(derived[d.name]),
                "unit": d.unit,
                "target": list(d.target) if d.target else None,
                "target_met": _meets(d.target, statistics.median(derived[d.name])),
                "rounds": derived[d.name],
            }
            for d in scenario.derived
            if derived[d.name]
        },
        # Contenders that failed (error) or were not run (skipped): not in "contenders".
        **({"not_measured": out_of_run} if out_of_run else {}),
    }


# -- reporting ------------------------------------------------------------------------


def _fs_type(path: str) -> str | None:
    # fsync cost (durability "full") depends on the filesystem, so record it.
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = max(
        (m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
        key=lambda m: len(m[0]),
        default=None,
    )
    return best[1] if best else None


def machine_info(tmp_root: str | None) -> dict[str, Any]:
    import apsw

    tmp = tmp_root or tempfile.gettempdir()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "apsw": apsw.apswversion(),
        "sqlite": apsw.sqlite_lib_version(),
        "tmpdir": tmp,
        "tmpdir_fs": _fs_type(tmp),
    }


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, sc in results.items():
        for cname, c in sc["contenders"].items():
            rate, r = c["rate"], c["ratio"]
            is_ref = cname == sc["reference"]
            # A contender may say what durability it ran at (e.g. "WAL, synchronous=FULL").
            note = c["rounds"][0]["extra"].get("durability_note") if c["rounds"] else None
            checked = c["target_met"] is not None
            target = f"{sc['target'][0]} {sc['target'][1]:g}" if checked else ""
            met = {True: "ok", False: "MISS", None: ""}[c["target_met"]]
            rows.append([
                name,
                cname + (" (ref)" if is_ref else "") + (f" [{note}]" if note else ""),
                f"{_num(rate['median'])} {sc['unit']}/s",
                f"{_num(rate['min'])}..{_num(rate['max'])}",
                "1" if is_ref else f"{r['median']:.3f} [{r['min']:.3f}..{r['max']:.3f}]",
                f"{sc['ratio']} {target} {met}".strip() if not is_ref else "",
                f"{c['peak_rss_kib'] / 1024:.1f}",
            ])  # fmt: skip
        for cname, why in sc.get("not_measured", {}).items():
            text = why.get("error") or why.get("skipped") or ""
            label = "FAILED" if "error" in why else "skipped"
            rows.append([name, cname, label, text.splitlines()[-1][:60] if text else "",
                         "", "", ""])  # fmt: skip
    return rows


_HEADERS = ["scenario", "contender", "median", "min..max", "ratio [min..max]", "target", "peak MiB"]


def _derived_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, sc in results.items():
        for dname, d in sc.get("derived", {}).items():
            target = f"{d['target'][0]} {d['target'][1]:g}" if d["target"] else ""
            met = {True: "ok", False: "MISS", None: ""}[d["target_met"]]
            rows.append([
                name,
                dname,
                f"{_num(d['median'])} {d['unit']}".strip(),
                f"{_num(d['min'])}..{_num(d['max'])}",
                f"{target} {met}".strip(),
            ])  # fmt: skip
    return rows


_DERIVED_HEADERS = ["scenario", "figure", "median", "min..max", "target"]


def print_table(results: dict[str, Any], file: TextIO) -> None:
    _print(_rows(results), _HEADERS, "durable benchmarks (medians over rounds)", file)
    derived = _derived_rows(results)
    if derived:
        _print(derived, _DERIVED_HEADERS, "derived figures (per round, medians over rounds)", file)


def _print(rows: list[list[str]], headers: list[str], title: str, file: TextIO) -> None:
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(title, file=file)
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        for r in [headers, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)), file=file)
        return
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*(escape(cell) for cell in r))  # names like "x[full]" are not markup
    # Off a terminal rich would wrap at 80 columns; results logs read better unwrapped.
    width = None if file.isatty() else 140
    Console(file=file, width=width).print(table)


if __name__ == "__main__":
    _child(sys.argv[1:])
