"""Run tags: set on @durable, start and enqueue; sealed with the run; found by the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import Engine, durable
from engine.cli import cli
from journal import Journal, RunCorrupted


@durable(name="test_tags:bill", tags={"team": "billing"})
def bill(customer: str) -> str:
    return f"bill {customer}"


class TestTags:
    """Stored, merged, listed (both backends)."""

    def test_start_and_decorator_tags_merge_and_list(self, journal_location: str) -> None:
        """start(tags=) adds to @durable(tags=); list_runs(tags=) wants every tag given."""
        with Engine(journal_location) as eng:
            acme = eng.start(bill, ("acme",), {}, tags={"customer": "acme"})
            bob = eng.start(bill, ("bob",), {}, tags={"customer": "bob", "team": "sales"})
            plain = eng.start(bill, ("zed",), {})
            for handle in (acme, bob, plain):
                handle.result(timeout=30)
            journal = eng.journal
            assert journal.get_run(acme.run_id).tags == {"customer": "acme", "team": "billing"}
            assert journal.get_run(bob.run_id).tags == {"customer": "bob", "team": "sales"}
            assert journal.get_run(plain.run_id).tags == {"team": "billing"}

            def ids(**tags: str) -> list[str]:
                return [r.run_id for r in journal.list_runs(tags=tags, limit=None)]

            assert ids(customer="acme") == [acme.run_id]
            assert ids(team="billing") == [acme.run_id, plain.run_id]
            assert ids(team="billing", customer="acme") == [acme.run_id]
            assert ids(team="billing", customer="bob") == []
            assert ids(customer="nobody") == []
            done = journal.list_runs(tags={"team": "billing"}, status="completed", limit=1)
            assert [r.run_id for r in done] == [acme.run_id]

    def test_enqueue_takes_tags(self, journal_location: str) -> None:
        """A queued run carries its tags before any worker touches it."""
        with Engine(journal_location) as eng:
            fn = durable(name="test_tags:queued", engine=eng, tags={"a": "1"})(_queued)
            handle = fn.enqueue(7, tags={"b": "2"})
            run = eng.journal.get_run(handle.run_id)
            assert run.status == "pending" and run.tags == {"a": "1", "b": "2"}
            assert [r.run_id for r in eng.journal.list_runs(tags={"b": "2"})] == [run.run_id]

    @pytest.mark.parametrize(
        ("tags", "error"),
        [
            ({"": "x"}, ValueError),
            ({"a=b": "x"}, ValueError),
            ({"k": 3}, TypeError),
            ({7: "x"}, TypeError),
            ({"k": "v" * 1001}, ValueError),
            ({f"k{i}": "v" for i in range(33)}, ValueError),
            (["k", "v"], TypeError),
        ],
    )
    def test_bad_tags_write_nothing(self, db_path: Path, tags: object, error: type) -> None:
        """Bad tags raise a typed error before any row is written."""
        with Engine(db_path) as eng:
            with pytest.raises(error):
                eng.start(bill, ("x",), {}, tags=tags)  # type: ignore[arg-type]
            assert eng.journal.list_runs() == []


def _queued(n: int) -> int:
    return n


class TestSealed:
    """Tags are part of the run's checksummed row; the index is checked against it."""

    def test_altered_tags_fail_the_checksum(self, db_path: Path) -> None:
        """Changing a run's tags on disk makes reading it a RunCorrupted."""
        with Journal(db_path) as journal:
            journal.create_run("r", name="n", tags={"customer": "acme"})
            journal.raw_connection().execute(
                "UPDATE runs SET meta = ? WHERE run_id = 'r'",
                (json.dumps({"tags": {"customer": "evil"}}),),
            )
            with pytest.raises(RunCorrupted):
                journal.get_run("r")

    def test_an_altered_index_does_not_list_a_wrong_run(self, db_path: Path) -> None:
        """An index row pointing a tag at a run that does not carry it is ignored."""
        with Journal(db_path) as journal:
            journal.create_run("a", name="n", tags={"customer": "acme"})
            journal.create_run("b", name="n", tags={"customer": "bob"})
            journal.raw_connection().execute(
                "INSERT INTO run_tags (key, value, run_id) VALUES ('customer', 'acme', 'b')"
            )
            assert [r.run_id for r in journal.list_runs(tags={"customer": "acme"})] == ["a"]

    def test_index_is_written_with_the_run_only(self, db_path: Path) -> None:
        """Creating an existing run id again adds no index rows."""
        with Journal(db_path) as journal:
            journal.create_run("a", name="n", tags={"k": "v"})
            _, created = journal.create_run("a", name="n", tags={"k": "v", "x": "y"})
            assert not created
            rows = journal.query("SELECT key, value, run_id FROM run_tags")
            assert rows == [{"key": "k", "value": "v", "run_id": "a"}]


class TestCli:
    """``durable runs --tag KEY=VALUE``."""

    def test_runs_by_tag(self, db_path: Path) -> None:
        """Only the tagged runs are listed; --json shows each run's tags."""
        with Journal(db_path) as journal:
            journal.create_run("a", name="n", tags={"customer": "acme", "env": "prod"})
            journal.create_run("b", name="n", tags={"customer": "bob"})
        runner = CliRunner()
        out = runner.invoke(cli, ["--db", str(db_path), "runs", "--tag", "customer=acme", "--json"])
        assert out.exit_code == 0, out.output
        docs = json.loads(out.output)
        assert [(d["run_id"], d["tags"]) for d in docs] == [
            ("a", {"customer": "acme", "env": "prod"})
        ]
        out = runner.invoke(
            cli, ["--db", str(db_path), "runs", "--tag", "customer=acme", "--tag", "env=dev"]
        )
        assert out.exit_code == 0 and "no runs" in out.output
        out = runner.invoke(cli, ["--db", str(db_path), "runs", "--tag", "x=a=b", "--json"])
        assert out.exit_code == 0 and json.loads(out.output) == []

    @pytest.mark.parametrize("bad", ["customer", "=acme", "a" * 101 + "=x"])
    def test_bad_tag_is_one_line_exit_2(self, db_path: Path, bad: str) -> None:
        """A malformed --tag is a usage error: exit 2, no traceback."""
        Journal(db_path).close()
        out = CliRunner().invoke(cli, ["--db", str(db_path), "runs", "--tag", bad])
        assert out.exit_code == 2
        assert "--tag" in out.output and "Traceback" not in out.output


def test_migrate_keeps_tags_findable(tmp_path: Path, journal_location: str) -> None:
    """``copy_journal`` indexes the copied runs' tags in the target."""
    from journal import copy_journal

    source = tmp_path / "source.db"
    with Journal(source) as journal:
        journal.create_run("a", name="n", tags={"customer": "acme"})
        journal.create_run("b", name="n")
    with Journal(source, readonly=True) as src, Journal(journal_location) as dst:
        assert copy_journal(src, dst).ok
        assert [r.run_id for r in dst.list_runs(tags={"customer": "acme"})] == ["a"]
        assert dst.get_run("a").tags == {"customer": "acme"}
