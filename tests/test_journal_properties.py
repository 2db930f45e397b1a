"""Property tests of the journal's invariants (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
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


class TestFoldInvariant:
    """Any sequence of appends, snapshots and compactions folds to the naive state."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(OPERATION, min_size=1, max_size=12), every=st.integers(0, 5))
    def test_state_at_equals_naive_fold_inside_horizon(
        self, ops: list[tuple[str, Any]], every: int
    ) -> None:
        """For every seq at or after the horizon, state_at equals the naive fold."""
        with tempfile.TemporaryDirectory() as tmp:
            j = Journal(Path(tmp) / "p.db", snapshots=SnapshotPolicy(every=every))
            try:
                j.create_run("r", name="f")
                model: list[tuple[str, Any, Any]] = []
                for op, arg in ops:
                    if op == "append":
                        j.append("r", [_entry(j, *m) for m in arg], expected_seq=len(model))
                        model += arg
                    elif op == "snapshot":
                        j.write_snapshot("r")
                    else:
                        j.compact("r", RetentionPolicy(keep_snapshots=arg, include_active=True))
                horizon = j.get_run("r").horizon
                for seq in range(horizon, len(model) + 1):
                    state = j.state_at("r", seq)
                    assert (state.values, state.pending) == naive_fold(model[:seq]), seq
                    assert state.seq == seq
                if horizon > 0:
                    with pytest.raises(HorizonError):
                        j.state_at("r", horizon - 1)
                assert j.verify().ok
            finally:
                j.close()


class TestOptimisticConcurrency:
    """An append naming a stale seq never writes."""

    @settings(max_examples=40, deadline=None)
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
