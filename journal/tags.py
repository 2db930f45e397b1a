"""Run tags: short ``key=value`` strings set when a run starts, to find its runs by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_TAGS", "check_tags", "parse_tag", "tag_clauses"]

MAX_TAGS = 32
_MAX_KEY = 100
_MAX_VALUE = 1000


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """``tags`` as stored (sorted by key), or ValueError/TypeError naming the bad tag.

    Keys are non-empty strings without ``=`` (``--tag key=value`` splits at the first
    one); values are strings. Tags are for finding runs, not for data: at most
    MAX_TAGS, keys up to 100 characters, values up to 1000."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping of str to str, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"a run takes at most {MAX_TAGS} tags, got {len(tags)}")
    out: dict[str, str] = {}
    for key in sorted(tags, key=str):
        value = tags[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"tag {key!r}: keys and values must be str, got {value!r}")
        if not key or "=" in key or len(key) > _MAX_KEY:
            raise ValueError(
                f"tag key {key!r}: a key is 1 to {_MAX_KEY} characters and holds no '='"
            )
        if len(value) > _MAX_VALUE:
            raise ValueError(f"tag {key!r}: a value is at most {_MAX_VALUE} characters")
        out[key] = value
    return out


def parse_tag(text: str) -> tuple[str, str]:
    """``"key=value"`` as ``(key, value)`` (split at the first ``=``); ValueError if none."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"a tag is written key=value, got {text!r}")
    return key, value


def tag_clauses(wanted: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """SQL conditions on ``runs`` (and their parameters) for runs indexed under every tag
    of ``wanted``; the index is not sealed, so callers check the rows' own tags too."""
    clauses = [
        "EXISTS (SELECT 1 FROM run_tags t WHERE t.key = ? AND t.value = ?"
        " AND t.run_id = runs.run_id)"
    ] * len(wanted)
    params = [item for pair in wanted.items() for item in pair]
    return clauses, params
