"""LlamaIndex's retry policies for workflow steps (``@step(retry_policy=...)``).

A policy answers ``next(elapsed_time, attempts, error)`` with the seconds to wait
before the next attempt, or None to give up. ``attempts`` counts the failed attempts
so far; it is journaled with each failure, so a run recovered after a crash goes on
from the count it had, never from zero.

``retry_policy(retry=, wait=, stop=)`` composes one from a retry condition (which
errors), a wait strategy (how long) and a stop condition (when to give up), as in
LlamaIndex workflows 2.x; conditions combine with ``|`` and ``&``, waits with ``+``.
Random waits draw from a seed fixed by run, step and attempt (:func:`retry_seed`), so a
recovered run waits as it would have.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryInfo",
    "StepRetryPolicy",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_cause_type",
    "retry_if_exception_message",
    "retry_if_exception_type",
    "retry_if_not_exception_message",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_policy",
    "retry_seed",
    "retry_unless_exception_type",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "wait_chain",
    "wait_combine",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
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


@dataclass(frozen=True)
class RetryInfo:
    """The executing step's retry state (``ctx.retry_info()``): ``retry_number`` 0 on
    the first attempt, seconds since the first attempt, and the latest failure.

    Read from the journal: after a crash the count goes on, and ``last_exception`` is
    rebuilt from its recorded class and message (without its traceback)."""

    retry_number: int
    elapsed_seconds: float
    last_exception: Exception | None
    last_failed_at: dt.datetime | None


Seconds = int | float | dt.timedelta


def _seconds(value: Seconds) -> float:
    return float(value.total_seconds() if isinstance(value, dt.timedelta) else value)


def _rng(seed: int | None) -> random.Random:
    return random.Random(seed) if seed is not None else random.Random()


class _Condition:
    """A retry condition: called with the error, True to retry. ``a | b``, ``a & b``."""

    def __call__(self, error: BaseException) -> bool:
        raise NotImplementedError

    def __or__(self, other: Callable[[BaseException], bool]) -> retry_any:
        return retry_any(self, other)

    def __ror__(self, other: Callable[[BaseException], bool]) -> retry_any:
        return retry_any(other, self)

    def __and__(self, other: Callable[[BaseException], bool]) -> retry_all:
        return retry_all(self, other)

    def __rand__(self, other: Callable[[BaseException], bool]) -> retry_all:
        return retry_all(other, self)


class retry_if_exception(_Condition):
    """Retry when ``predicate(error)`` is true."""

    def __init__(self, predicate: Callable[[BaseException], bool]) -> None:
        self.predicate = predicate

    def __call__(self, error: BaseException) -> bool:
        return bool(self.predicate(error))


ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


class retry_if_exception_type(retry_if_exception):
    """Retry errors of the given type(s)."""

    def __init__(self, exception_types: ExceptionTypes = Exception) -> None:
        self.exception_types = exception_types
        super().__init__(lambda error: isinstance(error, exception_types))


class retry_if_not_exception_type(retry_if_exception):
    """Retry errors not of the given type(s)."""

    def __init__(self, exception_types: ExceptionTypes = Exception) -> None:
        self.exception_types = exception_types
        super().__init__(lambda error: not isinstance(error, exception_types))


class retry_unless_exception_type(retry_if_not_exception_type):
    """The tenacity spelling of :class:`retry_if_not_exception_type`."""


class retry_if_exception_message(_Condition):
    """Retry when the error's message equals ``message`` or matches regex ``match``."""

    def __init__(self, message: str | None = None, match: str | re.Pattern[str] | None = None):
        if (message is None) == (match is None):
            raise TypeError("retry_if_exception_message() takes one of 'message' or 'match'")
        self.message = message
        self.match = match
        self._pattern = re.compile(match) if isinstance(match, str) else match

    def __call__(self, error: BaseException) -> bool:
        text = str(error)
        if self.message is not None:
            return text == self.message
        return bool(self._pattern is not None and self._pattern.search(text))


class retry_if_not_exception_message(retry_if_exception_message):
    """Retry unless the error's message equals ``message`` or matches ``match``."""

    def __call__(self, error: BaseException) -> bool:
        return not super().__call__(error)


class retry_if_exception_cause_type(_Condition):
    """Retry when an exception in the error's ``__cause__`` chain (``raise X from Y``)
    is of the given type(s)."""

    def __init__(self, exception_types: ExceptionTypes = Exception) -> None:
        self.exception_types = exception_types

    def __call__(self, error: BaseException) -> bool:
        cause = error.__cause__
        while cause is not None:
            if isinstance(cause, self.exception_types):
                return True
            cause = cause.__cause__
        return False


class retry_any(_Condition):
    """Retry when any of the conditions holds."""

    def __init__(self, *retries: Callable[[BaseException], bool]) -> None:
        self.retries = retries

    def __call__(self, error: BaseException) -> bool:
        return any(r(error) for r in self.retries)


class retry_all(_Condition):
    """Retry when all of the conditions hold."""

    def __init__(self, *retries: Callable[[BaseException], bool]) -> None:
        self.retries = retries

    def __call__(self, error: BaseException) -> bool:
        return all(r(error) for r in self.retries)


class retry_always(_Condition):
    """Retry every error."""

    def __call__(self, error: BaseException) -> bool:
        return True


class retry_never(_Condition):
    """Retry no error."""

    def __call__(self, error: BaseException) -> bool:
        return False


class _Wait:
    """A wait strategy: seconds before the next attempt after ``attempts`` failures.
    ``a + b`` (and ``sum()``) adds waits."""

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        raise NotImplementedError

    def __add__(self, other: Any) -> wait_combine:
        return wait_combine(self, other)

    def __radd__(self, other: Any) -> Any:
        if other == 0:  # sum() starts from 0
            return self
        if callable(other):
            return wait_combine(other, self)
        return NotImplemented


class wait_fixed(_Wait):
    """The same wait every time."""

    def __init__(self, wait: Seconds) -> None:
        self.wait = _seconds(wait)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return self.wait


class wait_none(wait_fixed):
    """No wait."""

    def __init__(self) -> None:
        super().__init__(0)


class wait_exponential(_Wait):
    """``multiplier * exp_base ** attempts``, kept within ``[min, max]``."""

    def __init__(
        self,
        multiplier: float = 1.0,
        exp_base: float = 2.0,
        max: Seconds = 60.0,
        min: Seconds = 0.0,
    ) -> None:
        self.multiplier, self.exp_base = float(multiplier), float(exp_base)
        self.max, self.min = _seconds(max), _seconds(min)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return max(0.0, self.min, min(self.multiplier * self.exp_base**attempts, self.max))


class wait_incrementing(_Wait):
    """``start + increment * attempts``, at most ``max``, never below 0."""

    def __init__(
        self,
        start: Seconds = 0.0,
        increment: Seconds = 100.0,
        max: Seconds = float("inf"),
    ) -> None:
        self.start, self.increment, self.max = _seconds(start), _seconds(increment), _seconds(max)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return max(0.0, min(self.start + self.increment * attempts, self.max))


class wait_random(_Wait):
    """A wait drawn uniformly from ``[min, max]``."""

    def __init__(self, min: Seconds = 0.0, max: Seconds = 1.0) -> None:
        self.min, self.max = _seconds(min), _seconds(max)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return _rng(seed).uniform(self.min, self.max)


class wait_exponential_jitter(_Wait):
    """``initial * exp_base ** attempts`` plus up to ``jitter`` at random, at most ``max``."""

    def __init__(
        self,
        initial: float = 1.0,
        exp_base: float = 2.0,
        max: float = 60.0,
        jitter: float = 1.0,
    ) -> None:
        self.initial, self.exp_base, self.max, self.jitter = initial, exp_base, max, jitter

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        base = min(self.initial * self.exp_base**attempts, self.max)
        return min(base + _rng(seed).uniform(0, self.jitter), self.max)


class wait_random_exponential(wait_exponential):
    """A wait drawn uniformly from ``min`` up to the exponential bound (full jitter)."""

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return _rng(seed).uniform(self.min, super().__call__(attempts))


def wait_full_jitter(
    multiplier: float = 1.0,
    exp_base: float = 2.0,
    max: Seconds = 60.0,
    min: Seconds = 0.0,
) -> wait_random_exponential:
    """Another name of :class:`wait_random_exponential`."""
    return wait_random_exponential(multiplier=multiplier, exp_base=exp_base, max=max, min=min)


class wait_chain(_Wait):
    """The n-th strategy for the n-th retry; the last one from then on."""

    def __init__(self, *strategies: Callable[..., float]) -> None:
        if not strategies:
            raise ValueError("wait_chain requires at least one strategy")
        self.strategies = strategies

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return float(self.strategies[min(attempts, len(self.strategies) - 1)](attempts, seed=seed))


class wait_combine(_Wait):
    """The sum of the strategies' waits."""

    def __init__(self, *strategies: Callable[..., float]) -> None:
        self.strategies = strategies

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        return float(sum(s(attempts, seed=seed) for s in self.strategies))


class _Stop:
    """A stop condition: True to give up. ``a | b``, ``a & b``."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        raise NotImplementedError

    def __or__(self, other: Callable[..., bool]) -> stop_any:
        return stop_any(self, other)

    def __ror__(self, other: Callable[..., bool]) -> stop_any:
        return stop_any(other, self)

    def __and__(self, other: Callable[..., bool]) -> stop_all:
        return stop_all(self, other)

    def __rand__(self, other: Callable[..., bool]) -> stop_all:
        return stop_all(other, self)


class stop_after_attempt(_Stop):
    """Give up once ``max_attempt_number`` attempts failed."""

    def __init__(self, max_attempt_number: int) -> None:
        self.max_attempt_number = max_attempt_number

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return attempts >= self.max_attempt_number


class stop_after_delay(_Stop):
    """Give up once ``max_delay`` seconds passed since the first attempt."""

    def __init__(self, max_delay: Seconds) -> None:
        self.max_delay = _seconds(max_delay)

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time >= self.max_delay


class stop_before_delay(_Stop):
    """Give up if the next wait would end past ``max_delay`` seconds."""

    def __init__(self, max_delay: Seconds) -> None:
        self.max_delay = _seconds(max_delay)

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time + upcoming_sleep >= self.max_delay


class stop_any(_Stop):
    """Give up when any of the conditions holds."""

    def __init__(self, *stops: Callable[..., bool]) -> None:
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return any(s(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for s in self.stops)


class stop_all(_Stop):
    """Give up when all of the conditions hold."""

    def __init__(self, *stops: Callable[..., bool]) -> None:
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return all(s(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for s in self.stops)


class stop_never(_Stop):
    """Never give up (the workflow's timeout is then the bound)."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return False


class _ComposedPolicy:
    """What :func:`retry_policy` builds."""

    def __init__(
        self,
        retry: Callable[[BaseException], bool] | None,
        wait: Callable[..., float],
        stop: Callable[..., bool],
    ) -> None:
        self.retry, self.wait, self.stop = retry, wait, stop

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """The wait before the next attempt, or None when the error is not retried or
        the stop condition holds."""
        if self.retry is not None and not self.retry(error):
            return None
        delay = float(self.wait(attempts, seed=seed))
        if self.stop(attempts, elapsed_time, upcoming_sleep=delay):
            return None
        return delay

    def __repr__(self) -> str:
        return f"retry_policy(retry={self.retry!r}, wait={self.wait!r}, stop={self.stop!r})"


def retry_policy(
    retry: Callable[[BaseException], bool] | None = None,
    wait: Callable[..., float] | None = None,
    stop: Callable[..., bool] | None = None,
) -> StepRetryPolicy:
    """A retry policy from a retry condition (default: every error), a wait strategy
    (default ``wait_fixed(5)``) and a stop condition (default ``stop_after_attempt(3)``)."""
    return _ComposedPolicy(
        retry,
        wait if wait is not None else wait_fixed(5),
        stop if stop is not None else stop_after_attempt(3),
    )
