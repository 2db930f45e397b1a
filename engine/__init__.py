"""The engine: durable functions, steps, Context, recovery.

Wrap a function with ``@durable`` and the side-effecting calls inside it with
``@step``; every call is journaled, and a crashed run resumes where it was.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .checkpointer import CheckpointCallback, WorkflowCheckpointer
from .context import Context, current_context, heartbeat, idempotency_key
from .drawing import (
    FlowGraph,
    draw_all_possible_flows,
    draw_all_possible_flows_mermaid,
    draw_most_recent_execution,
    draw_most_recent_execution_mermaid,
    run_graph,
    workflow_graph,
)
from .durable import DurableFunction, durable
from .errors import (
    BadSchedule,
    CannotResume,
    CircularResourceError,
    ContextSerdeError,
    ContextStateError,
    DedupKeyConflict,
    DrawingError,
    EngineError,
    FencedOff,
    FunctionNotFound,
    JournalUnreachable,
    NonDeterminismError,
    NotInRun,
    NotResumable,
    ResultTimeout,
    RunCancelled,
    RunFailed,
    RunIdConflict,
    ServiceNotFoundError,
    StepFailed,
    StepHeartbeatTimeout,
    StepTimeout,
    WorkerStopping,
    WorkflowConfigurationError,
    WorkflowRuntimeError,
    WorkflowStepDoesNotExistError,
    WorkflowValidationError,
    WrongFunction,
)
from .events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowFailedEvent,
)
from .logs import ReplayFilter
from .policies import RetryPolicy
from .queues import Queue
from .registry import UnrecoverableDefinition
from .replay import ReplayReport, replay, replay_all
from .resources import Resource, ResourceConfig, ResourceManager
from .resume import resume
from .retry import (  # LlamaIndex's composable retry primitives
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    RetryInfo,
    retry_all,
    retry_always,
    retry_any,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_if_not_exception_type,
    retry_never,
    retry_policy,
    retry_unless_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_combine,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
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
from .services import ServiceManager
from .state import State, TypedState
from .steps import StepSpec, catch_error, step
from .telemetry import Telemetry
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
    "CheckpointCallback",
    "CircularResourceError",
    "ConstantDelayRetryPolicy",
    "Context",
    "ContextSerdeError",
    "ContextStateError",
    "DedupKeyConflict",
    "DictState",
    "Diff",
    "DrawingError",
    "DurableFunction",
    "Engine",
    "EngineError",
    "Event",
    "ExponentialBackoffRetryPolicy",
    "FencedOff",
    "FlowGraph",
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
    "NotResumable",
    "PickleSerializer",
    "Queue",
    "RecoveryReport",
    "ReplayFilter",
    "ReplayReport",
    "Resource",
    "ResourceConfig",
    "ResourceManager",
    "ResultTimeout",
    "RetryInfo",
    "RetryPolicy",
    "RunCancelled",
    "RunFailed",
    "RunFinished",
    "RunHandle",
    "RunIdConflict",
    "Schedule",
    "ServiceManager",
    "ServiceNotFoundError",
    "StartEvent",
    "State",
    "StateView",
    "StepFailed",
    "StepFailedEvent",
    "StepHeartbeatTimeout",
    "StepNotFound",
    "StepSpec",
    "StepTimeout",
    "StopEvent",
    "StopReport",
    "Store",
    "Telemetry",
    "TypedState",
    "UnrecoverableDefinition",
    "WaitTimeout",
    "Worker",
    "WorkerStopping",
    "Workflow",
    "WorkflowCheckpoint",
    "WorkflowCheckpointer",
    "WorkflowConfigurationError",
    "WorkflowContext",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowStepDoesNotExistError",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "WorkflowTimeout",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "WrongFunction",
    "__version__",
    "add_schedule",
    "catch_error",
    "configure",
    "current_context",
    "default_engine",
    "diff",
    "draw_all_possible_flows",
    "draw_all_possible_flows_mermaid",
    "draw_most_recent_execution",
    "draw_most_recent_execution_mermaid",
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
    "resume",
    "resume_schedule",
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
    "retry_unless_exception_type",
    "run_graph",
    "send_event",
    "state_at",
    "step",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "tick_run_id",
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
    "workflow_graph",
]
