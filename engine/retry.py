"""LlamaIndex's retry policies for workflow steps (``@step(retry_policy=...)``).

A policy answers ``next(elapsed_time, attempts, error)`` with the seconds to wait
before the next attempt, or None to give up. ``attempts`` counts the failed attempts
so far; it is journaled with each failure, so a run recovered after a crash goes on
from the count it had, never from zero.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "StepRetryPolicy",
    "retry_seed",
]


@runtime_checkable
class StepRetryPolicy(Protocol):
    """Anything with LlamaIndex's ``next(elapsed_time, attempts, error)``."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """Seconds to wait before retrying, or None to stop."""
        ...


@dataclass(frozen=True)
class ConstantDelayRetryPolicy:
    """Retry after ``delay`` seconds, up to ``maximum_attempts`` attempts in all."""

    maximum_attempts: int = 3
    delay: float = 5

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """``delay`` while fewer than ``maximum_attempts`` attempts failed, else None."""
        return None if attempts >= self.maximum_attempts else float(self.delay)


@dataclass(frozen=True)
class ExponentialBackoffRetryPolicy:
    """Retry with waits growing from ``initial_delay`` by ``multiplier`` up to
    ``max_delay`` (drawn uniformly below that bound when ``jitter``), up to
    ``maximum_attempts`` attempts in all."""

    maximum_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """The wait after ``attempts`` failures, or None once they reach the maximum."""
        if attempts >= self.maximum_attempts:
            return None
        bound = max(0.0, min(self.initial_delay * self.multiplier**attempts, self.max_delay))
        if not self.jitter:
            return bound
        rng = random.Random(seed) if seed is not None else random
        return rng.uniform(0.0, bound)


def retry_seed(run_id: str, step: str, attempts: int) -> int:
    """A jitter seed fixed by run, step and attempt: a recovered run waits as it would have."""
    digest = hashlib.sha256(f"{run_id}:{step}:{attempts}".encode()).hexdigest()
    return int(digest, 16) & 0xFFFF_FFFF
