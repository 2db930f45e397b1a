"""``python -m benchmarks``: run every scenario (or ``--only`` some), print and save the results."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .harness import Scenario, machine_info, print_table, run_scenario

# One module per scenario family; each exposes scenarios(quick) -> list[Scenario].
MODULES = (
    "benchmarks.journal_bench",
    "benchmarks.engine_bench",
    "benchmarks.workflow_bench",
    "benchmarks.timetravel_bench",
    "benchmarks.peers_bench",
    "benchmarks.scaling_bench",
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def versions() -> dict[str, Any]:
    """Versions of every contender: ours, and each peer's (from its venv)."""
    from engine import __version__

    from .peers import status

    return {"durable": __version__, "peers": status()}


def all_scenarios(quick: bool) -> list[Scenario]:
    return [s for m in MODULES for s in importlib.import_module(m).scenarios(quick)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add = p.add_argument
    add("--quick", action="store_true", help="CI smoke run: small counts, 2 rounds")
    add("--json", action="store_true", help="print JSON results on stdout (the table to stderr)")
    add("--rounds", type=int, help="interleaved rounds per scenario (default 5; --quick 2)")
    add(
        "--only",
        action="append",
        metavar="NAME",
        help="run scenarios with this name, family (e.g. 'append') or glob; repeatable",
    )
    add(
        "--out",
        type=Path,
        help=f"directory for <date>.json (default {DEFAULT_OUT}; --quick writes only if given)",
    )
    add(
        "--merge",
        action="store_true",
        help="keep the other scenarios of an existing <date>.json, replacing only those run",
    )
    add("--tmpdir", help="where each measurement's fresh directory is made (default: system temp)")
    add("--list", action="store_true", help="list scenario names and exit")
    add(
        "--install-peers",
        action="store_true",
        help="create the peers' venvs under benchmarks/.peers/ (pinned, from PyPI) and exit",
    )
    args = p.parse_args(argv)

    if args.install_peers:
        from .peers import install

        errors = install()
        return 1 if any(errors.values()) else 0

    scenarios = all_scenarios(args.quick)
    if args.list:
        for s in scenarios:
            print(f"{s.name:20} {s.description}")
        return 0
    if args.only:
        scenarios = [s for s in scenarios if any(s.matches(o) for o in args.only)]
        if not scenarios:
            names = ", ".join(s.name for s in all_scenarios(args.quick))
            p.error(f"no scenario matches {args.only}; available: {names}")
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        p.error("--rounds must be >= 1")

    log = sys.stderr
    for s in scenarios:
        for name, why in s.skipped:
            print(f"{s.name}: skipping {name}: {why}", file=log)
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, Any] = {}
    for s in scenarios:
        print(f"{s.name}: {s.description}", file=log, flush=True)
        results[s.name] = run_scenario(s, rounds=rounds, tmp_root=args.tmpdir, log=log)
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 2),
        "machine": machine_info(args.tmpdir),
        "versions": versions(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds,
            "only": args.only,
            "tmpdir": args.tmpdir,
        },
        "scenarios": results,
    }

    print_table(results, file=log if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=2))
    if args.out is not None or not args.quick:
        out = args.out or DEFAULT_OUT
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{started.astimezone().date().isoformat()}.json"
        if args.merge and path.exists():
            old = json.loads(path.read_text())
            report["scenarios"] = {**old.get("scenarios", {}), **results}
            # Every run merged so far, oldest first (a file of one merge held a dict).
            earlier = old.get("merged_into", [])
            earlier = [earlier] if isinstance(earlier, dict) else earlier
            report["merged_into"] = [*earlier, {k: old.get(k) for k in ("started_at", "settings")}]
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {path}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
