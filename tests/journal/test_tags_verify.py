"""``verify`` checks the run_tags index against the tags each run sealed in its row:
crafted journals (raw SQL) on both backends."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine.cli import cli
from journal import Journal
from journal._schema import RUN_FIELDS, SEALED_INDEX, run_checksum


def _tagged(location: str) -> None:
    with Journal(location) as j:
        j.create_run("a", name="n", tags={"customer": "acme", "team": "billing"})
        j.create_run("b", name="n", tags={"customer": "bob"})
        j.create_run("c", name="n")
        assert j.verify().ok


def _problems(location: str, run_id: str | None = None) -> list[str]:
    with Journal(location) as j:
        return j.verify(run_id).problems


def test_a_sound_index_passes(journal_location: str) -> None:
    _tagged(journal_location)
    assert _problems(journal_location) == []


def test_index_rows_that_disagree_with_the_run(journal_location: str) -> None:
    """A tag missing from the index, one added, one with another value: each reported,
    naming the run, the tag and both values."""
    _tagged(journal_location)
    with Journal(journal_location) as j:
        db = j.backend
        db.execute("DELETE FROM run_tags WHERE run_id = 'a' AND key = 'team'")
        db.execute("INSERT INTO run_tags (key, value, run_id) VALUES ('customer', 'acme', 'c')")
        db.execute("UPDATE run_tags SET value = 'eve' WHERE run_id = 'b'")
    problems = _problems(journal_location)
    assert sorted(problems) == [
        "run 'a': tag 'team' is 'billing' in the run but absent in run_tags",
        "run 'b': tag 'customer' is 'bob' in the run but 'eve' in run_tags",
        "run 'c': tag 'customer' is absent in the run but 'acme' in run_tags",
    ]
    assert _problems(journal_location, "b") == [
        "run 'b': tag 'customer' is 'bob' in the run but 'eve' in run_tags"
    ]


def test_two_values_for_one_key(journal_location: str) -> None:
    _tagged(journal_location)
    with Journal(journal_location) as j:
        j.backend.execute(
            "INSERT INTO run_tags (key, value, run_id) VALUES ('customer', 'zed', 'b')"
        )
    problems = _problems(journal_location)
    assert any("run 'b': run_tags indexes tag 'customer' under two values" in p for p in problems)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [("", "x", "a key is 1 to"), ("a=b", "x", "holds no '='"), ("k", "v" * 1001, "at most 1000")],
    ids=["empty-key", "equals-in-key", "long-value"],
)
def test_malformed_index_rows(journal_location: str, key: str, value: str, why: str) -> None:
    _tagged(journal_location)
    with Journal(journal_location) as j:
        j.backend.execute(
            "INSERT INTO run_tags (key, value, run_id) VALUES (?, ?, 'c')", (key, value)
        )
    problems = _problems(journal_location)
    assert len(problems) == 1 and problems[0].startswith("run 'c': run_tags holds a malformed tag")
    assert why in problems[0]


def test_rows_for_a_run_that_does_not_exist(journal_location: str) -> None:
    _tagged(journal_location)
    with Journal(journal_location) as j:
        if j.is_postgres:  # a forger with the database drops the foreign key first
            j.backend.execute("ALTER TABLE run_tags DROP CONSTRAINT run_tags_run_id_fkey")
        else:
            j.backend.execute("PRAGMA foreign_keys = OFF")
        j.backend.execute("INSERT INTO run_tags (key, value, run_id) VALUES ('k', 'v', 'ghost')")
    assert _problems(journal_location) == [
        "run_tags: tag 'k'='v' indexes run 'ghost', which does not exist"
    ]


def test_malformed_recorded_tags(journal_location: str) -> None:
    """Tags sealed in the row (checksum recomputed) that no writer stores: reported."""
    _tagged(journal_location)
    with Journal(journal_location) as j:
        db = j.backend
        meta = json.dumps({"tags": {"bad=key": "x"}})
        db.execute("UPDATE runs SET meta = ? WHERE run_id = 'c'", (meta,))
        row = list(db.select_run("c"))[:-1]
        assert row[RUN_FIELDS.index("meta")] == meta
        checksum = run_checksum([row[i] for i in SEALED_INDEX])
        db.execute("UPDATE runs SET checksum = ? WHERE run_id = 'c'", (checksum,))
        assert j.get_run("c").meta == {"tags": {"bad=key": "x"}}
    problems = _problems(journal_location)
    assert len(problems) == 1 and problems[0].startswith("run 'c': its recorded tags are malformed")


def test_the_cli_reports_tag_problems_exit_1(journal_location: str) -> None:
    _tagged(journal_location)
    with Journal(journal_location) as j:
        j.backend.execute("DELETE FROM run_tags WHERE run_id = 'b'")
    result = CliRunner().invoke(cli, ["verify", "--db", journal_location])
    assert result.exit_code == 1, result.output
    assert "run 'b': tag 'customer' is 'bob' in the run but absent in run_tags" in result.output
