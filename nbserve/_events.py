"""The kinds of event the agent records: one spelling, shared by the agent (which writes them),
the client (which says some of them to the user who deployed) and the panel (which marks them by
the severity each event carries). A shared contract: no imports beyond the standard library."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

__all__ = ["Event", "AUDITED", "SAID_AT_DEPLOY", "Severity", "severity_of"]

Severity = Literal["info", "warning", "error"]


class Event(StrEnum):
    # a deployment and its versions
    DEPLOYMENT_CREATED = "deployment_created"
    VERSION_REGISTERED = "version_registered"
    DEPLOYED = "deployed"
    DEPLOY_FAILED = "deploy_failed"
    BUILD_FAILED = "build_failed"  # reported by a client whose kernel could not build the Bento
    ROLLOUT_SKIPPED = "rollout_skipped"
    CONFIGURED = "configured"
    ALIAS_SET = "alias_set"
    ALIAS_REMOVED = "alias_removed"
    # checks before traffic
    PARITY_PASSED = "parity_passed"
    PARITY_SKIPPED = "parity_skipped"
    PARITY_NOT_APPLICABLE = "parity_not_applicable"
    BATCHING_CHECKED = "batching_checked"
    BATCHING_WARNING = "batching_warning"
    BATCHING_UNAVAILABLE = "batching_unavailable"
    # the runtime: the compiled model did not answer as the native one, or could not be made
    RUNTIME_FALLBACK = "runtime_fallback"
    # rollouts
    CANARY_STARTED = "canary_started"
    SHADOW_STARTED = "shadow_started"
    CANARY_RESUMED = "canary_resumed"
    SHADOW_RESUMED = "shadow_resumed"
    CANARY_CHANGED = "canary_changed"
    PROMOTED = "promoted"
    ABORTED = "aborted"
    GATE_BREACHED = "gate_breached"
    ROLLBACK = "rollback"
    DRAIN_TIMEOUT = "drain_timeout"
    # where a version runs (its own environment when the agent's differs)
    ENVIRONMENT_PREPARING = "environment_preparing"
    ENVIRONMENT_READY = "environment_ready"
    # serving processes
    STARTED = "started"
    STOPPED = "stopped"
    ADOPTED = "adopted"
    START_INTERRUPTED = "start_interrupted"
    RESTARTING = "restarting"
    RESTARTED = "restarted"
    RESTART_FAILED = "restart_failed"
    PROCESS_EXITED = "process_exited"
    WORKER_EXITED = "worker_exited"
    WORKER_RESTARTED = "worker_restarted"
    SCALED = "scaled"
    MOVED = "moved"  # the live version now runs on another engine (scale(engine=...))
    SCALED_TO_ZERO = "scaled_to_zero"
    WOKEN = "woken"
    WAKE_FAILED = "wake_failed"
    MEMORY_EXCEEDED = "memory_exceeded"
    BATCH_OVERLOADED = "batch_overloaded"
    # replicas on an engine that runs them on several nodes (Ray)
    REPLICA_LOST = "replica_lost"
    REPLICA_RESTORED = "replica_restored"
    # models in a shared model server (engine="shared"): loaded on demand, evicted by its LRU
    MODEL_LOADED = "model_loaded"
    MODEL_EVICTED = "model_evicted"
    QUARANTINED = "quarantined"  # it kept crashing its shared server: it runs in one of its own now
    # schedules
    SCHEDULE_ADDED = "schedule_added"
    SCHEDULE_PAUSED = "schedule_paused"
    SCHEDULE_RESUMED = "schedule_resumed"
    SCHEDULE_REMOVED = "schedule_removed"
    SCHEDULED_RUN = "scheduled_run"
    # the agent
    AGENT_STARTED = "agent_started"
    AGENT_STOPPED = "agent_stopped"
    METRICS_DAMAGED = "metrics_damaged"


# Events that also write a hash-chained audit record: changes someone (or a gate) made.
AUDITED = frozenset({
    Event.DEPLOYMENT_CREATED, Event.VERSION_REGISTERED, Event.DEPLOYED, Event.CANARY_STARTED,
    Event.SHADOW_STARTED, Event.PROMOTED, Event.ABORTED, Event.GATE_BREACHED, Event.CANARY_CHANGED,
    Event.ROLLBACK, Event.STOPPED, Event.STARTED, Event.CONFIGURED, Event.MOVED, Event.ALIAS_SET, Event.ALIAS_REMOVED,
    Event.SCHEDULE_ADDED, Event.SCHEDULE_PAUSED, Event.SCHEDULE_RESUMED, Event.SCHEDULE_REMOVED,
})
# Said to the user who deployed (a warning line in %deploy's progress): it serves, but a setting wants changing.
SAID_AT_DEPLOY = frozenset({Event.BATCHING_WARNING, Event.BATCHING_UNAVAILABLE, Event.RUNTIME_FALLBACK})
_WARNINGS = SAID_AT_DEPLOY | {Event.BATCH_OVERLOADED, Event.MEMORY_EXCEEDED, Event.DRAIN_TIMEOUT,
                              Event.GATE_BREACHED, Event.ROLLBACK, Event.ABORTED, Event.START_INTERRUPTED,
                              Event.REPLICA_LOST, Event.QUARANTINED}
_ERRORS = frozenset({Event.DEPLOY_FAILED, Event.BUILD_FAILED, Event.RESTART_FAILED, Event.WAKE_FAILED,
                     Event.PROCESS_EXITED, Event.WORKER_EXITED, Event.METRICS_DAMAGED})


def severity_of(kind: str) -> Severity:
    """How the panel marks an event: ``error`` (something failed), ``warning`` (it serves, but
    traffic was taken away or a setting wants changing), else ``info``. A kind this agent does
    not know (one an older or newer agent wrote) is ``info``."""
    if kind in _ERRORS:
        return "error"
    return "warning" if kind in _WARNINGS else "info"
