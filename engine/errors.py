"""The engine's exception tree.

::

    EngineError
    ├── NonDeterminismError   replay met code doing what the journal did not record
    ├── StepFailed            a step's last attempt failed (recorded: replay raises it too)
    │   └── StepTimeout       ... because an attempt ran past its timeout
    │       └── StepHeartbeatTimeout  ... or went longer than its heartbeat timeout silent
    ├── RunFailed             awaiting a run that ended in failure
    ├── RunCancelled          the run was cancelled (raised in its body at a step boundary)
    ├── RunFinished           an event sent to a run that has already ended
    ├── FencedOff             this worker lost the run's lease; it stopped without writing
    │   ├── JournalUnreachable  ... or could not reach the journal's database to commit
    │   └── WorkerStopping      ... or is stopping: the run paused at a step boundary
    ├── CannotResume          this process cannot resume a run (marked with the reason)
    ├── NotResumable          ``resume`` of a run that is not failed (or not resumable)
    ├── FunctionNotFound      a recorded function or workflow can no longer be imported
    ├── RunIdConflict         a run id that exists with other input
    │   └── WrongFunction     ... or that belongs to another function
    │       └── DedupKeyConflict  ... or a deduplication key another function's run holds
    ├── StepNotFound          no checkpoint with that number (or at that time) in the run
    ├── BadSchedule           a cron expression, time zone or missed-ticks policy that is not valid
    ├── NotInRun              a run-only helper (ctx access, idempotency key) used outside a run
    ├── ResultTimeout         ``handle.result(timeout)`` expired before the run ended
    ├── WorkflowValidationError     a workflow's steps or graph are invalid (LlamaIndex's name)
    │   └── WorkflowConfigurationError  ... found when the workflow is built
    ├── WorkflowRuntimeError  a workflow run went wrong (a step returned a non-event, ...)
    ├── WorkflowTimeoutError  a workflow run did not stop within its timeout (LlamaIndex's name)
    ├── WaitTimeout           ``ctx.wait_for_event`` reached its timeout
    ├── NoStepForEvent        a step produced an event no step of the workflow accepts
    ├── WorkflowStepDoesNotExistError  a checkpointer was named a step the workflow lacks
    ├── DrawingError          nothing to draw: no run of the workflow, or not a workflow run
    ├── ContextStateError     a workflow Context used in a state that does not allow it
    ├── ContextSerdeError     a workflow Context could not be serialized or restored
    ├── CircularResourceError   resource factories that depend on each other in a circle
    ├── ServiceNotFoundError  no workflow was added under that name (``add_workflows``)
    ├── CrashSafetyError      ``CrashReport.assert_ok`` found a recovered run that differs
    └── the web UI's (``durable ui``), each answered with its HTTP status:
        ├── BadRequest        a parameter or body the API cannot use (400)
        ├── ReadOnly          an action on a UI opened read-only (403)
        ├── UnsupportedMedia  an action whose body is not JSON (415)
        ├── BodyTooLarge      a request body past the UI's limit (413)
        └── BadToken          a fixed access token that is too short or not URL-safe

Several also derive from the built-in exception a caller would catch (``TimeoutError``,
``ValueError``, ``LookupError``, ``TypeError``, ``RuntimeError``, ``KeyError``,
``AssertionError``): the LlamaIndex-compatible names keep LlamaIndex's bases.
Not errors, and so not here: ``ContinueAsNew`` and ``ReplayStop`` (``engine.execution``)
and ``SimulatedCrash`` (``engine.testing``) are control-flow signals deriving from
``BaseException`` so that no ``except Exception`` swallows them;
``UnrecoverableDefinition`` (``engine.registry``) is a warning; the CLI's ``Failure``
and ``CheckFailed`` are click's exceptions; ``DemoFailed`` is the demo's own user-code
failure.

Journal errors (``journal.JournalError``) pass through unchanged: a value the
codec cannot encode is still a ``journal.SerializationError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "BadSchedule",
    "BadToken",
    "BodyTooLarge",
    "CannotResume",
    "CircularResourceError",
    "ContextSerdeError",
    "ContextStateError",
    "CrashSafetyError",
    "DedupKeyConflict",
    "DrawingError",
    "EngineError",
    "FencedOff",
    "FunctionNotFound",
    "JournalUnreachable",
    "NoStepForEvent",
    "NonDeterminismError",
    "NotInRun",
    "NotResumable",
    "ReadOnly",
    "ResultTimeout",
    "RunCancelled",
    "RunFailed",
    "RunFinished",
    "RunIdConflict",
    "ServiceNotFoundError",
    "StepFailed",
    "StepHeartbeatTimeout",
    "StepNotFound",
    "StepTimeout",
    "UnsupportedMedia",
    "WaitTimeout",
    "WorkerStopping",
    "WorkflowConfigurationError",
    "WorkflowRuntimeError",
    "WorkflowStepDoesNotExistError",
    "WorkflowTimeout",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "WrongFunction",
]


class EngineError(Exception):
    """Base class of every error raised by the engine."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.context = context
        for name, value in context.items():
            setattr(self, name, value)


class NonDeterminismError(EngineError):
    """The code took a different path than the journal recorded; the run is parked as diverged."""


class StepFailed(EngineError):
    """A step raised on its last attempt. ``error_type`` and ``error`` describe the cause."""


class StepTimeout(StepFailed):
    """A step attempt ran longer than its timeout."""


class StepHeartbeatTimeout(StepTimeout):
    """A step attempt went longer than its ``heartbeat_timeout`` without calling
    ``ctx.heartbeat()``: treated as dead, failed, and left to the retry policy."""


class RunFailed(EngineError):
    """The run ended in failure; ``error`` holds what was recorded."""


class RunCancelled(EngineError):
    """The run was cancelled."""


class FencedOff(EngineError):
    """Another worker claimed the run (this one's lease expired); nothing more was written."""


class JournalUnreachable(FencedOff):
    """A commit failed twice because the journal's database could not be reached; the run
    stopped without writing, and recovery resumes it from its last commit."""


class WorkerStopping(FencedOff):
    """The worker executing the run is stopping: the run stopped at a step boundary
    without writing, and its lease was released for another worker to resume it."""


class CannotResume(EngineError):
    """This process could not resume the run: its recorded data does not decode here, or
    a resource factory raised. The run is left unfinished, its lease released and the
    reason in its ``error``; ``reason`` holds it."""


class NotResumable(EngineError):
    """``resume`` refused the run, and wrote nothing: only a failed run can be resumed
    (``status`` is what it is now; a concurrent resume may have reopened it first), and
    only with its journal whole (``reason`` says which)."""


class FunctionNotFound(EngineError):
    """The run's function or workflow cannot be imported by its recorded name."""


class RunIdConflict(EngineError):
    """The run id exists, started with other input; nothing was written. ``differences``
    names what differs: the same input attaches to the existing run instead."""


class WrongFunction(RunIdConflict):
    """The run id exists but belongs to a different function."""


class DedupKeyConflict(WrongFunction):
    """An unfinished run of another function holds this deduplication key in this
    queue; nothing was queued. ``key``, ``queue`` and ``run_id`` name the holder."""


class BadSchedule(EngineError, ValueError):
    """A schedule that cannot fire: a cron expression ``cronsim`` refuses, a time zone
    ``zoneinfo`` does not know, or an unknown missed-ticks policy."""


class NotInRun(EngineError, RuntimeError):
    """A helper that needs a running durable function was called outside one."""


class ResultTimeout(EngineError, TimeoutError):
    """The run did not finish within the timeout given to ``result()``."""


class WorkflowValidationError(EngineError, TypeError):
    """A workflow's steps do not form a valid workflow: a step's signature (when the
    class is defined) or the graph of its events (when it is built or first run)."""


class WorkflowConfigurationError(WorkflowValidationError):
    """A workflow cannot be built: no step accepts its StartEvent, none returns a
    StopEvent, or it has several StartEvent or StopEvent types."""


class WorkflowRuntimeError(EngineError, RuntimeError):
    """A workflow run went wrong outside any step's own code: a step returned
    something that is not an event, or a start event could not be built."""


class ContextStateError(EngineError, RuntimeError):
    """A workflow Context was used in a state that does not allow it: a typed state
    without a model, or a store change from outside a step of a running run."""


class ContextSerdeError(EngineError, ValueError):
    """A workflow Context could not be serialized (``to_dict``) or restored
    (``from_dict``); the message names the key or event at fault."""


class WorkflowStepDoesNotExistError(EngineError, KeyError):
    """A ``WorkflowCheckpointer`` was given a step name the workflow does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DrawingError(EngineError, ValueError):
    """Nothing to draw: a workflow with no run yet, or a run that is not a workflow's."""


class CircularResourceError(EngineError, ValueError):
    """Resource factories depend on each other in a circle."""


class ServiceNotFoundError(EngineError):
    """No workflow was added under that name (``add_workflows``)."""


class RunFinished(EngineError):
    """The run has already ended: it takes no more events."""


class StepNotFound(EngineError, LookupError):
    """No checkpoint with that number (or none at that time) in the run."""


class NoStepForEvent(EngineError):
    """A step produced an event that no step of the workflow accepts."""


class WaitTimeout(EngineError, TimeoutError):
    """``ctx.wait_for_event`` reached its timeout."""


class WorkflowTimeoutError(EngineError, TimeoutError):
    """The run did not reach a StopEvent within the workflow's timeout."""


WorkflowTimeout = WorkflowTimeoutError
"""The former name of :class:`WorkflowTimeoutError`."""


class CrashSafetyError(EngineError, AssertionError):
    """:meth:`CrashReport.assert_ok` found a recovered run that differs."""


# -- the web UI's (engine.ui), each answered with an HTTP status --------------------------


class BadRequest(EngineError, ValueError):
    """A query parameter or request body the API cannot use (answered with 400)."""


class ReadOnly(EngineError):
    """The UI was opened read-only: actions are refused (403)."""


class UnsupportedMedia(EngineError):
    """An action's body must be JSON (415): a cross-site HTML form cannot send that."""


class BodyTooLarge(EngineError):
    """A request body past the UI's limit (``engine.ui.app.MAX_BODY``; 413), refused as
    soon as it is seen."""


class BadToken(EngineError, ValueError):
    """A fixed token (``--token``, ``$DURABLE_UI_TOKEN``) that is too short or holds
    characters a URL or a cookie cannot carry as they are."""
