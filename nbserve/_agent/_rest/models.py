"""The REST API's request and response models, by resource (the routers use them).

Their names, fields and docstrings are the OpenAPI document's schemas (docs/openapi.json):
renaming one renames a schema. ``ActorRequest`` and the schedules' ``ActorIn`` are the same
shape under two published names. The serving knobs' fields (``ScaleRequest``, ``BatchingIn``) are
built from nbserve._settings' rows: their bounds and descriptions are spelled there once.
"""

from __future__ import annotations

import datetime as _dt
import functools
import operator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..._events import Severity
from ..._settings import AUTOSCALING_KNOBS, BATCHING_KNOBS, ENGINES, SERVING_KNOBS, Setting
from .._access import DEFAULT_EXPIRY_SECONDS
from .._schedule_rules import DEFAULT_TIMEOUT, MAX_TIMEOUT

# Version numbers and row ids are SQLite INTEGERs: a larger one cannot even be looked up.
MAX_INT = 2**63 - 1

# -- errors: the body of every 4xx and 5xx answer ------------------------------------------


class ErrorBody(BaseModel):
    type: str = Field(description="The nbserve exception class, e.g. DeploymentNotFound")
    message: str
    hint: str | None = None
    details: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- the agent -----------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    pid: int
    home: str
    deployments: int


# -- deployments and their versions --------------------------------------------------------


class VersionOut(BaseModel):
    deployment: str
    number: int
    created_at: str
    created_by: str | None
    bento_tag: str
    status: Literal["starting", "live", "warm", "canary", "shadow", "stopped", "failed"]
    error: str | None
    running: bool = Field(description="a serving process of this version is up")
    ready: bool = Field(description="that process passed its health check and can take traffic")
    upstream_url: str | None = Field(description="the version's own server, for debugging")
    environment: str | None = Field(default=None, description="where its server runs: 'agent' (the agent's own "
                                    "environment) or the key of its own under NBSERVE_HOME/envs; null when not running")
    preparing: dict[str, Any] | None = Field(default=None, description="while its environment is being built: "
                                             "python, packages, and how the agent's own differs")
    engine: str | None = Field(default=None, description="the engine it runs on (local, shared, ray): where it "
                               "was moved (scale(engine=...)), else where it was deployed (metadata.engine)")
    metadata: dict[str, Any] = Field(description="schema, model, provenance, description")


class DeploymentOut(BaseModel):
    name: str
    url: str | None = Field(description="the stable URL: a BentoML-compatible service base URL")
    status: Literal["serving", "starting", "restarting", "failed", "stopped", "cold"]
    live_version: int | None
    latest_version: int | None
    created_at: str
    keep_warm: int
    rollout: dict[str, Any] | None = Field(
        default=None, description="the canary or shadow under way: mode, version, percent, started_at, auto_promote"
    )
    aliases: dict[str, int] = Field(default_factory=dict, description="named versions: <url>/v/<alias>/...")
    versions: list[VersionOut]


class DeployRequest(BaseModel):
    upload_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$",
                                  description="an archive sent with POST /v1/uploads")
    archive_path: str | None = Field(
        default=None, max_length=4096,
        description="Path of an exported Bento archive on the agent's host (owner token only)",
    )
    stable_port: int | None = Field(default=None, ge=1024, le=65535)
    remove_archive: bool = False
    actor: str | None = Field(default=None, max_length=200)
    canary: float | None = Field(default=None, gt=0, le=100, description="percent of requests for the new version")
    shadow: bool = Field(default=False, description="mirror live traffic to the new version; never answer from it")
    auto_promote: bool = Field(default=False, description="promote once the gates pass for their window")
    skip_parity: bool = Field(default=False, description="do not replay the reference sample before traffic")
    sticky_header: str | None = Field(default=None, max_length=100,
                                      description="canary routing by a hash of this header's value")
    serving: dict[str, Any] | None = Field(
        default=None, description="workers, memory, cpus, idle_timeout, batching, autoscaling and engine "
                                  "(local or ray): set on the deployment before this version starts")


class RollbackRequest(BaseModel):
    to: int | None = Field(default=None, ge=1, description="version number; default: the previous")
    actor: str | None = Field(default=None, max_length=200)


class ActorRequest(BaseModel):
    actor: str | None = Field(default=None, max_length=200)


class AliasIn(BaseModel):
    version: int = Field(ge=1, le=MAX_INT)
    actor: str | None = Field(default=None, max_length=200)


class UploadOut(BaseModel):
    upload_id: str
    size: int
    sha256: str


class LogsOut(BaseModel):
    deployment: str
    version: int
    path: str
    text: str


# -- events --------------------------------------------------------------------------------


class EventOut(BaseModel):
    id: int
    ts: str
    deployment: str | None
    version: int | None
    kind: str = Field(description="one of nbserve._events.Event (an older or newer agent may write others)")
    severity: Severity = Field(description="error: something failed; warning: it serves, but traffic was "
                               "taken away or a setting wants changing; else info")
    message: str
    actor: str | None
    data: dict[str, Any]


class ReportRequest(BaseModel):
    """A failure the client saw before the agent was involved (e.g. the Bento build)."""

    kind: Literal["build_failed"]
    message: str = Field(max_length=4000)
    actor: str | None = Field(default=None, max_length=200)


# -- rollouts ------------------------------------------------------------------------------


class CanaryRequest(BaseModel):
    percent: float = Field(gt=0, le=100)
    actor: str | None = Field(default=None, max_length=200)


class RolloutOut(BaseModel):
    mode: Literal["canary", "shadow"]
    version: int
    percent: float | None
    sticky_header: str | None = None
    auto_promote: bool
    started_at: float
    started_by: str | None = None
    gates: dict[str, Any]
    figures: dict[str, Any] = Field(description="requests, p50_ms, p99_ms, error_rate, drift_share, age_seconds")
    verdict: Literal["waiting", "pass", "breach"]
    reasons: list[str]


# -- capacity: workers, caps, scale to zero, batching --------------------------------------


def _knob_type(knob: Setting) -> Any:
    """The field's type, from the JSON types the knob takes: a float field takes whole numbers
    as well, so int is left out beside float (``cpus``: ``float | str``)."""
    types = [t for t in knob.json_types if not (t is int and float in knob.json_types)]
    return functools.reduce(operator.or_, types) | None


def knob_fields(knobs: tuple[Setting, ...]) -> dict[str, Any]:
    """The knobs as optional request fields (left out: unchanged), with their rows' bounds and descriptions."""
    fields = {}
    for knob in knobs:
        limits = {key: bound for key, bound in (("ge", knob.minimum), ("le", knob.maximum)) if bound is not None}
        extra = {"description": knob.api_description} if knob.api_description else {}
        fields[knob.name] = (_knob_type(knob), Field(default=None, **limits, **extra))
    return fields


BatchingIn = create_model(
    "BatchingIn", __config__=ConfigDict(extra="forbid"), **knob_fields(BATCHING_KNOBS),
    __doc__="BentoML's adaptive batching; a field left out keeps its current value (or BentoML's default).")


class BatchingOut(BaseModel):
    max_batch_size: int
    max_latency_ms: float


AutoscalingIn = create_model(
    "AutoscalingIn", __config__=ConfigDict(extra="forbid"), **knob_fields(AUTOSCALING_KNOBS),
    __doc__="Ray Serve's autoscaler for a Ray version; a field left out keeps its current value (or its default).")


class AutoscalingOut(BaseModel):
    min: int
    max: int
    target_ongoing_requests: float
    downscale_delay: str | float


ScaleRequest = create_model(
    "ScaleRequest", **knob_fields(SERVING_KNOBS),
    batching=(bool | BatchingIn | None, Field(default=None, description="true/settings: turn adaptive batching "
                                                                        "on or change it; false: off")),
    autoscaling=(bool | AutoscalingIn | None, Field(default=None, description="true/settings: Ray Serve's "
                                                    "autoscaler on (a Ray version) or changed; false: off")),
    engine=(Literal[ENGINES] | None, Field(default=None, description="move the live version to this engine "  # type: ignore[valid-type]
                                             "(local: a server of its own; shared: a shared model server; ray) "
                                             "without dropping a request; later versions run there too")),
    actor=(str | None, Field(default=None, max_length=200)))


class SharedModelOut(BaseModel):
    version: int
    server: str = Field(description="the shared model server it runs in (its environment and worker count)")
    loaded: bool = Field(description="its model is in the server's memory now (else its next request loads it)")
    memory_bytes: int | None = Field(default=None, description="what loading its model added to the server's RSS")
    requests: int = Field(default=0, description="requests it answered since its model was last loaded")
    loads: int = Field(default=0, description="times its model was loaded (more than one: it was evicted)")
    evictions: int = Field(default=0, description="times the server's LRU unloaded it to make room")
    load_seconds: float | None = Field(default=None, description="how long its last load took")


class ReplicaOut(BaseModel):
    version: int
    state: str = Field(description="Ray's actor state: ALIVE, PENDING_CREATION, RESTARTING, DEAD")
    node: str | None = Field(description="the Ray node it runs on")
    pid: int | None
    rss_bytes: int | None = Field(default=None, description="its resident memory, when it runs on the agent's host")
    cpu_percent: float | None = Field(default=None, description="its CPU since the agent last looked "
                                                                "(100 = one core), when on the agent's host")


class ResourceRow(BaseModel):
    deployment: str
    state: Literal["warm", "cold", "stopped", "starting"]
    live_version: int | None
    servers: int = Field(description="bentoml serve processes (live, warm, canary)")
    workers: int = Field(description="workers per server")
    cpu_percent: float
    rss_bytes: int
    processes: int
    memory_cap: int | None
    cpus_cap: float | None
    enforcement: str | None = Field(description="cgroup-v2, cgroup-v1 or watchdog, when a cap is set")
    idle_timeout: str | None
    batching: BatchingOut | None = Field(default=None, description="adaptive batching settings, when on")
    idle_seconds: float | None = Field(description="since the last request through the stable URL")
    held: int = Field(description="connections waiting for a cold deployment to start")
    last_cold_start_seconds: float | None = Field(default=None,
                                                  description="how long the last start from zero took")
    environments: list[str] = Field(default_factory=list, description="where its servers run: 'agent' (the "
                                    "agent's own environment) or the keys of their own under NBSERVE_HOME/envs")
    engine: str = Field(default="local", description="where its versions run: local (bentoml serve), shared "
                                                     "(a shared model server), ray, or two joined by + (a canary on "
                                                     "one, the live version on the other)")
    autoscaling: AutoscalingOut | None = Field(default=None, description="Ray Serve's autoscaler, when on")
    replicas: list[ReplicaOut] = Field(default_factory=list,
                                       description="on the Ray engine: each replica of its running versions")
    models: list[SharedModelOut] = Field(default_factory=list,
                                         description="on the shared engine: each running version's model in its "
                                                     "shared server")


# -- monitoring ----------------------------------------------------------------------------


class LatencyRow(BaseModel):
    time: int = Field(description="start of the minute, unix seconds (UTC)")
    version: int | None = Field(default=None, description="with by_version=true; 0: no version served")
    requests: int
    errors: int = Field(description="5xx answers")
    client_errors: int = Field(description="4xx answers (e.g. 422 schema mismatches)")
    error_rate: float | None = Field(description="errors / requests")
    rps: float
    rows: int = Field(description="payload rows")
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None


class DriftFlag(BaseModel):
    drifted: bool | None = Field(description="dataset drift over the drift window; null: too little traffic")
    share: float | None
    features: int
    rows: int


class QualityFlag(BaseModel):
    metric: str | None = Field(description="accuracy (classifiers) or rmse (regressors)")
    value: float | None = Field(description="the live version's figure in its newest hour with labels")
    previous: float | None = Field(description="the hour before, for the trend")
    labelled: int
    task: str | None


class SummaryOut(BaseModel):
    window_seconds: float
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    sparkline: list[float] = Field(description="request rate per minute, last 30 minutes, oldest first")
    drift: DriftFlag
    quality: QualityFlag
    protocols: dict[str, int] = Field(
        default_factory=dict,
        description="requests per wire format since the agent started: bentoml (/predict and the other "
                    "API routes), v2 (Open Inference), mlflow (/invocations), openai (/v1/embeddings)")


class TableOut(BaseModel):
    """A pandas DataFrame in ``orient="split"`` form (without the index)."""

    columns: list[str]
    data: list[list[Any]]


class DriftOut(BaseModel):
    version: int | None = None
    report: list[dict[str, Any]] = Field(description="one row per feature: method, score, threshold, drifted, ...")
    dataset_drift: bool
    drift_share: float
    drifted_features: int
    features: int = Field(description="features evaluated (the denominator of drift_share)")
    n_reference: int
    n_current: int


class ConfigUpdate(BaseModel):
    settings: dict[str, Any] = Field(description="capture, sample_rate, sample_budget_per_minute, drift, drift_window")
    actor: str | None = Field(default=None, max_length=200)


# -- quality: labels and metrics -----------------------------------------------------------


class FeedbackIn(BaseModel):
    ids: list[str] = Field(max_length=1_000_000,
                           description='prediction ids: "<x-request-id>:<row>" (or the bare id of a one-row request)')
    y_true: list[Any] = Field(max_length=1_000_000, description="the real outcome of each, in the same order")


class FeedbackOut(BaseModel):
    received: int
    stored: int
    updated: int = Field(description="labels that replaced an earlier one for the same row")
    unknown: int = Field(description="no sampled prediction has that id (or row)")
    duplicate: int = Field(description="the same id twice in this batch: the first was kept")
    invalid: int = Field(description="not a number, string or boolean")
    examples: dict[str, list[str]] = Field(description="up to 5 ids of each problem")


class QualityOut(BaseModel):
    task: str | None = Field(description="classification or regression")
    labelled: int = Field(description="labelled rows in the window")
    rows: list[dict[str, Any]] = Field(description="per bucket and version: time, version, labelled, metrics")


# -- access: tokens and the audit log ------------------------------------------------------


class WhoAmI(BaseModel):
    name: str
    role: Literal["admin", "deployer", "viewer", "predict"]
    deployments: list[str] | None


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    role: Literal["admin", "deployer", "viewer", "predict"]
    deployments: list[str] | None = Field(default=None, max_length=1000,
                                          description="limit the token to these deployments (default: all)")
    expires_in: float | None = Field(default=DEFAULT_EXPIRY_SECONDS, gt=0, le=10 * 365 * 86400,
                                     description="seconds until it expires; null: never")


class TokenRotate(BaseModel):
    grace: float = Field(default=0.0, ge=0, le=30 * 86400,
                         description="seconds the old secret keeps working (default: it stops now)")


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    deployments: list[str] | None
    created_at: float
    created_by: str | None
    expires_at: float | None
    revoked_at: float | None
    state: Literal["active", "expired", "revoked"]


class NewTokenOut(TokenOut):
    token: str = Field(description="the secret: shown once, never stored by the agent")


class AuditOut(BaseModel):
    seq: int
    ts: str
    actor: str = Field(description="who: the token's name (or, for the owner token, the user it names)")
    token: str | None = Field(description="the token used; null for the agent's own actions (gates, restarts)")
    source: str | None = Field(description="the client's address")
    action: str
    deployment: str | None
    version: int | None
    before: int | None = Field(description="the live version before the change")
    after: int | None = Field(description="the live version after it")
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditCheck(BaseModel):
    ok: bool
    records: int
    broken_at: int | None
    problem: str | None
    head: str | None = Field(description="hash of the last record: keep it elsewhere to detect a rewritten chain")


# -- schedules -----------------------------------------------------------------------------


class ScheduleIn(BaseModel):
    name: str = Field(description="the schedule's name (unique); also the deployment unless `deployment` is set")
    deployment: str | None = Field(default=None, description="the deployment it retrains (default: name)")
    notebook: str = Field(description="absolute path of the notebook on the agent's host")
    cron: str = Field(description="cron expression, five fields (croniter), e.g. '0 3 * * *'")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in")
    parameters: dict[str, Any] = Field(default_factory=dict, description="papermill parameters (JSON values)")
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT,
                           description="seconds before a run is stopped (whole process tree) as timed_out")
    missed: Literal["skip", "run_once"] = Field(
        default="run_once", description="due times missed while the agent was down: run once, or skip")
    kernel: str | None = Field(
        default=None, max_length=200,
        description="Jupyter kernel the runs use (one the agent has); default: the notebook's own "
                    "(its kernelspec metadata), else python3")
    actor: str | None = Field(default=None, max_length=200)


class ScheduleOut(BaseModel):
    name: str
    deployment: str
    notebook: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    timeout_seconds: float
    missed: Literal["skip", "run_once"]
    paused: bool
    created_by: str | None
    created_at: str
    next_run_at: str | None = Field(description="next due time (UTC); ignored while paused")
    last_run_at: str | None
    kernel: str = Field(description="the Jupyter kernel its runs use")
    running_run: int | None = Field(description="id of the run in progress, if any")


class RunOut(BaseModel):
    id: int
    schedule: str
    deployment: str
    trigger: Literal["cron", "manual", "missed"]
    status: Literal["running", "succeeded", "failed", "timed_out", "skipped"]
    due_at: str | None = Field(description="the cron due time it ran for (null for manual runs)")
    started_at: str
    finished_at: str | None
    duration_seconds: float | None
    parameters: dict[str, Any]
    executed_notebook: str | None = Field(description="the notebook papermill executed (nbformat)")
    log_path: str | None = Field(description="papermill's log of the run")
    version: int | None = Field(description="the version of the deployment this run produced")
    reason: str | None = Field(description="why it produced no version, was skipped or stopped")
    error: str | None = Field(description="the notebook's error, e.g. 'ValueError: ...' (cell N)")
    actor: str | None


class ScheduleBrief(ScheduleOut):
    """A schedule with its newest run, as a list shows it."""

    last_run: RunOut | None


class ActorIn(BaseModel):
    actor: str | None = Field(default=None, max_length=200)


class TickIn(BaseModel):
    now: _dt.datetime | None = Field(
        default=None, description="the instant to fire at (ISO 8601; naive means UTC); default: the agent's clock")


# -- the panel's poll (GET /v1/state) ------------------------------------------------------


class EnvironmentOut(BaseModel):
    environment: str = Field(description="its key: a hash of the Python and the pins")
    path: str
    python: str | None = None
    packages: list[str] = Field(default_factory=list, description="the pins it was built for")
    serving: list[str] = Field(default_factory=list, description="what the generated service needs beside them")
    bytes: int | None = Field(default=None, description="disk it holds of its own: files not hard-linked with uv's "
                              "cache or another environment (its bytecode, its scripts)")
    total_bytes: int | None = Field(default=None, description="everything in it, each file once, shared ones included")
    seconds: float | None = Field(default=None, description="how long it took to build")
    created_at: float | None = None
    used_at: float | None = None
    incomplete: bool = Field(default=False, description="a build that did not finish (prune removes it)")
    versions: list[dict[str, Any]] = Field(default_factory=list,
                                           description="versions whose pins need it: deployment, version, status, running")


class PruneOut(BaseModel):
    removed: list[dict[str, Any]]
    kept: list[dict[str, Any]] = Field(description="environments versions need, with those versions")


class VersionBrief(BaseModel):
    number: int
    status: Literal["starting", "live", "warm", "canary", "shadow", "stopped", "failed"]


class RolloutBrief(BaseModel):
    """The canary or shadow under way as the deployment has it (figures: GET .../rollout)."""

    mode: Literal["canary", "shadow"]
    version: int
    percent: float | None = Field(description="share of new requests (canary); null for a shadow")
    started_at: float | None = Field(description="unix seconds")
    auto_promote: bool
    sticky_header: str | None = None


class DeploymentBrief(BaseModel):
    """One deployment as a list shows it, with its figures: what a panel polls."""

    name: str
    status: Literal["serving", "starting", "restarting", "failed", "stopped", "cold"]
    live_version: int | None
    url: str | None = Field(description="the stable URL")
    versions: list[VersionBrief]
    rollout: RolloutBrief | None
    aliases: dict[str, int] = Field(description="named versions: <url>/v/<alias>/...")
    summary: SummaryOut | None = Field(description="the last 5 minutes (GET .../summary); null: it could not "
                                                   "be read")
    latest_event_id: int | None = Field(description="its newest event's id: fetch events when it moves")
    resources: ResourceRow | None = Field(description="its row of GET /v1/resources")


class StateOut(BaseModel):
    """Everything a panel's periodic poll needs, in one request."""

    deployments: list[DeploymentBrief] = Field(description="those the token sees")
    schedules: list[ScheduleBrief] = Field(description="every schedule, for a token that may list them "
                                                       "(GET /v1/schedules); [] for a token limited to "
                                                       "some deployments")
