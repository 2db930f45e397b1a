"""Retry policy: a small value object handed to ``@step``."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is retried. Every attempt is journaled, so the limit
    holds across crashes: a step that failed twice before a restart has used two.

    ``attempts`` counts the first call; waits grow from ``wait_initial`` by
    ``wait_exp_base`` up to ``wait_max``, plus up to ``wait_jitter`` at random.
    Only exceptions matching ``on`` are retried.
    """

    attempts: int = 1
    wait_initial: float = 0.1
    wait_max: float = 30.0
    wait_exp_base: float = 2.0
    wait_jitter: float = 0.0
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.wait_initial < 0 or self.wait_max < 0 or self.wait_jitter < 0:
            raise ValueError("RetryPolicy waits must be >= 0")

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """True if attempt number ``attempt`` failing with ``exc`` is followed by another."""
        return attempt < self.attempts and isinstance(exc, self.on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        base = min(self.wait_max, self.wait_initial * self.wait_exp_base ** (attempt - 1))
        return base + (random.uniform(0, self.wait_jitter) if self.wait_jitter else 0.0)
