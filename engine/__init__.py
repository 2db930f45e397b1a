"""The engine: durable functions, steps, Context, recovery.

Wrap a function with ``@durable`` and the side-effecting calls inside it with
``@step``; every call is journaled, and a crashed run resumes where it was.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .context import Context, current_context, heartbeat, idempotency_key
from .durable import DurableFunction, durable
from .errors import (
    BadSchedule,
    CannotResume,
    ContextSerdeError,
    ContextStateError,
    DedupKeyConflict,
    EngineError,
    FencedOff,
    FunctionNotFound,
    JournalUnreachable,
    NonDeterminismError,
    NotInRun,
    ResultTimeout,
    RunCancelled,
    RunFailed,
    RunIdConflict,
    StepFailed,
    StepHeartbeatTimeout,
    StepTimeout,
    WorkerStopping,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowValidationError,
    WrongFunction,
)
from .events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from .logs import ReplayFilter
from .policies import RetryPolicy
from .queues import Queue
from .registry import UnrecoverableDefinition
from .replay import ReplayReport, replay, replay_all
from .retry import ConstantDelayRetryPolicy, ExponentialBackoffRetryPolicy
from .runtime import Engine, RecoveryReport, RunHandle, StopReport, configure, default_engine
from .schedules import (
    LATE_GRACE,
    MissedTicks,
    Schedule,
    add_schedule,
    fire_schedules,
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    tick_run_id,
)
from .serializers import BaseSerializer, JsonPickleSerializer, JsonSerializer, PickleSerializer
from .state import State, TypedState
from .steps import StepSpec, step
from .timetravel import (
    Checkpoint,
    Diff,
    StateView,
    StepNotFound,
    diff,
    fork,
    history,
    iter_history,
    state_at,
)
from .worker import Worker
from .workflow import (
    RunFinished,
    Workflow,
    WorkflowCheckpoint,
    WorkflowHandler,
    send_event,
)
from .workflow_context import DictState, Store, WorkflowContext
from .workflow_run import NoStepForEvent, WaitTimeout, WorkflowTimeout, WorkflowTimeoutError
from .workflow_testing import WorkflowTestResult, WorkflowTestRunner

try:
    __version__ = version("durable")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"


def recover(
    *, wait: bool = True, timeout: float | None = None, wait_leased: bool = False
) -> RecoveryReport:
    """Resume every unfinished run of the default engine's journal whose lease expired;
    runs still held by a lease are reported (``wait_leased``: waited for)."""
    return default_engine().recover(wait=wait, timeout=timeout, wait_leased=wait_leased)


__all__ = [
    "LATE_GRACE",
    "BadSchedule",
    "BaseSerializer",
    "CannotResume",
    "Checkpoint",
    "ConstantDelayRetryPolicy",
    "Context",
    "ContextSerdeError",
    "ContextStateError",
    "DedupKeyConflict",
    "DictState",
    "Diff",
    "DurableFunction",
    "Engine",
    "EngineError",
    "Event",
    "ExponentialBackoffRetryPolicy",
    "FencedOff",
    "FunctionNotFound",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "JournalUnreachable",
    "JsonPickleSerializer",
    "JsonSerializer",
    "MissedTicks",
    "NoStepForEvent",
    "NonDeterminismError",
    "NotInRun",
    "PickleSerializer",
    "Queue",
    "RecoveryReport",
    "ReplayFilter",
    "ReplayReport",
    "ResultTimeout",
    "RetryPolicy",
    "RunCancelled",
    "RunFailed",
    "RunFinished",
    "RunHandle",
    "RunIdConflict",
    "Schedule",
    "StartEvent",
    "State",
    "StateView",
    "StepFailed",
    "StepHeartbeatTimeout",
    "StepNotFound",
    "StepSpec",
    "StepTimeout",
    "StopEvent",
    "StopReport",
    "Store",
    "TypedState",
    "UnrecoverableDefinition",
    "WaitTimeout",
    "Worker",
    "WorkerStopping",
    "Workflow",
    "WorkflowCheckpoint",
    "WorkflowConfigurationError",
    "WorkflowContext",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "WorkflowTimeout",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "WrongFunction",
    "__version__",
    "add_schedule",
    "configure",
    "current_context",
    "default_engine",
    "diff",
    "durable",
    "fire_schedules",
    "fork",
    "heartbeat",
    "history",
    "idempotency_key",
    "iter_history",
    "list_schedules",
    "pause_schedule",
    "recover",
    "remove_schedule",
    "replay",
    "replay_all",
    "resume_schedule",
    "send_event",
    "state_at",
    "step",
    "tick_run_id",
]
