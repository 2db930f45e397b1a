"""Property tests of the journal's invariants (hypothesis)."""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _trials import scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import ConflictError, EntryKind, HorizonError, Journal, RetentionPolicy, SnapshotPolicy

K = EntryKind
KEYS = st.sampled_from(["a", "b", "c", "d"])
EVENT_IDS = st.sampled_from(["e1", "e2", "e3"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
MUTATION = st.one_of(
    st.tuples(st.just(K.STATE_SET), KEYS, VALUES),
    st.tuples(st.just(K.STATE_DELETED), KEYS, st.none()),
    st.tuples(st.just(K.EVENT_EMITTED), EVENT_IDS, VALUES),
    st.tuples(st.just(K.EVENT_CONSUMED), EVENT_IDS, st.none()),
    st.tuples(st.just(K.STEP_COMPLETED), st.just(None), VALUES),
    # Lists that only ever grow by appends (the engine emits state.appended only
    # when the old value is a list the new one extends).
    st.tuples(
        st.just(K.STATE_APPENDED),
        st.sampled_from(["la", "lb"]),
        st.lists(VALUES, min_size=1, max_size=3),
    ),
)
OPERATION = st.one_of(
    st.tuples(st.just("append"), st.lists(MUTATION, min_size=1, max_size=6)),
    st.tuples(st.just("snapshot"), st.none()),
    st.tuples(st.just("compact"), st.integers(min_value=1, max_value=3)),
)


def naive_fold(entries: list[tuple[str, Any, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The obviously-correct fold the journal must agree with."""
    values: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    for kind, key, value in entries:
        if kind == K.STATE_SET:
            values[key] = value
        elif kind == K.STATE_DELETED:
            values.pop(key, None)
        elif kind == K.STATE_APPENDED:
            values[key] = values.get(key, []) + value
        elif kind == K.EVENT_EMITTED:
            pending[key] = value
        elif kind == K.EVENT_CONSUMED:
            pending.pop(key, None)
    return values, pending


def _entry(j: Journal, kind: str, key: Any, value: Any) -> Any:
    if kind in (K.STATE_DELETED, K.EVENT_CONSUMED):
        return j.entry(kind, key=key)
    return j.entry(kind, value, key=key)


def check_fold(j: Journal, run_id: str, ops: list[tuple[str, Any]]) -> None:
    """Apply ``ops`` to a new run; every state inside the horizon is the naive fold."""
    j.create_run(run_id, name="f")
    model: list[tuple[str, Any, Any]] = []
    for op, arg in ops:
        if op == "append":
            j.append(run_id, [_entry(j, *m) for m in arg], expected_seq=len(model))
            model += arg
        elif op == "snapshot":
            j.write_snapshot(run_id)
        else:
            j.compact(run_id, RetentionPolicy(keep_snapshots=arg, include_active=True))
    horizon = j.get_run(run_id).horizon
    for seq in range(horizon, len(model) + 1):
        state = j.state_at(run_id, seq)
        assert (state.values, state.pending) == naive_fold(model[:seq]), seq
        assert state.seq == seq
    if horizon > 0:
        with pytest.raises(HorizonError):
            j.state_at(run_id, horizon - 1)
        # What every pass dropped, added up in the horizon snapshot: kind by kind.
        record = j.compaction(run_id)
        assert record is not None and record.horizon == horizon
        assert record.entries == horizon
        assert record.kinds == dict(Counter(kind for kind, _, _ in model[:horizon]))
    else:
        assert j.compaction(run_id) is None
    assert j.verify(run_id).ok


class TestFoldInvariant:
    """Any sequence of appends, snapshots and compactions folds to the naive state."""

    @settings(max_examples=scaled(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPERATION, min_size=1, max_size=12), every=st.integers(0, 5))
    def test_state_at_equals_naive_fold_inside_horizon(
        self, ops: list[tuple[str, Any]], every: int
    ) -> None:
        """For every seq at or after the horizon, state_at equals the naive fold."""
        with tempfile.TemporaryDirectory() as tmp:
            j = Journal(Path(tmp) / "p.db", snapshots=SnapshotPolicy(every=every))
            try:
                check_fold(j, "r", ops)
                assert j.verify().ok  # the whole file, its own integrity check included
            finally:
                j.close()


@pytest.fixture(scope="module")
def pg_props_url(pg_url: str) -> Iterator[str]:
    """One PostgreSQL schema for every example of the module (each uses fresh run ids)."""
    sep = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{sep}schema=t_props_{uuid.uuid4().hex[:8]}"


@pytest.mark.postgres
class TestFoldInvariantPostgres:
    """The fold invariant on the PostgreSQL backend: snapshots and compaction there too
    (fewer examples: each costs round trips; the SQLite suite explores the space)."""

    @settings(max_examples=scaled(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPERATION, min_size=1, max_size=12), every=st.integers(0, 5))
    def test_state_at_equals_naive_fold_inside_horizon(
        self, pg_props_url: str, ops: list[tuple[str, Any]], every: int
    ) -> None:
        """For every seq at or after the horizon, state_at equals the naive fold."""
        with Journal(pg_props_url, snapshots=SnapshotPolicy(every=every)) as j:
            check_fold(j, f"r-{uuid.uuid4().hex[:12]}", ops)


class TestOptimisticConcurrency:
    """An append naming a stale seq never writes."""

    @settings(max_examples=scaled(40), deadline=None)
    @given(
        first=st.lists(MUTATION, min_size=1, max_size=5),
        wrong=st.integers(min_value=-0, max_value=20),
        second=st.lists(MUTATION, min_size=1, max_size=5),
    )
    def test_wrong_expected_seq_conflicts_and_leaves_the_run_unchanged(
        self, first: list[Any], wrong: int, second: list[Any]
    ) -> None:
        """Any expected seq other than the last is refused with nothing written."""
        with tempfile.TemporaryDirectory() as tmp:
            j = Journal(Path(tmp) / "c.db")
            try:
                j.create_run("r", name="f")
                j.append("r", [_entry(j, *m) for m in first], expected_seq=0)
                if wrong == len(first):
                    wrong += 1
                before = [(e.seq, e.kind, e.payload) for e in j.read("r")]
                with pytest.raises(ConflictError):
                    j.append("r", [_entry(j, *m) for m in second], expected_seq=wrong)
                assert [(e.seq, e.kind, e.payload) for e in j.read("r")] == before
                assert j.get_run("r").last_seq == len(first)
            finally:
                j.close()
