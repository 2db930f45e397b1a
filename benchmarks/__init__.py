"""Benchmarks for durable: ``python -m benchmarks [--quick] [--json] [--only NAME]``.

Each scenario family lives in its own module (``journal_bench``, ``engine_bench``) and
exposes ``scenarios(quick) -> list[Scenario]``; :mod:`benchmarks.harness` runs
the contenders of a scenario interleaved, each measurement in its own process.
"""

# Kept free of imports: ``python -m benchmarks.harness`` (the child entry point)
# would otherwise find the module already imported and warn.
