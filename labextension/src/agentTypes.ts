// Generated from the agent's OpenAPI document by nbserve/_agent/_openapi_ts.py: do not edit.
// Regenerate: python -m nbserve._agent._openapi_ts > labextension/src/agentTypes.ts
// (after a change to the agent's models; tests/test_docs.py fails while this file is stale).

/**
 * The kinds of event this agent writes (nbserve/_events.py). `EventOut.kind` stays a string: an
 * older or newer agent may write others.
 */
export type EventKind =
  | 'deployment_created'
  | 'version_registered'
  | 'deployed'
  | 'deploy_failed'
  | 'build_failed'
  | 'rollout_skipped'
  | 'configured'
  | 'alias_set'
  | 'alias_removed'
  | 'parity_passed'
  | 'parity_skipped'
  | 'parity_not_applicable'
  | 'batching_checked'
  | 'batching_warning'
  | 'batching_unavailable'
  | 'runtime_fallback'
  | 'canary_started'
  | 'shadow_started'
  | 'canary_resumed'
  | 'shadow_resumed'
  | 'canary_changed'
  | 'promoted'
  | 'aborted'
  | 'gate_breached'
  | 'rollback'
  | 'drain_timeout'
  | 'environment_preparing'
  | 'environment_ready'
  | 'started'
  | 'stopped'
  | 'adopted'
  | 'start_interrupted'
  | 'restarting'
  | 'restarted'
  | 'restart_failed'
  | 'process_exited'
  | 'worker_exited'
  | 'worker_restarted'
  | 'scaled'
  | 'moved'
  | 'scaled_to_zero'
  | 'woken'
  | 'wake_failed'
  | 'memory_exceeded'
  | 'batch_overloaded'
  | 'replica_lost'
  | 'replica_restored'
  | 'model_loaded'
  | 'model_evicted'
  | 'quarantined'
  | 'schedule_added'
  | 'schedule_paused'
  | 'schedule_resumed'
  | 'schedule_removed'
  | 'scheduled_run'
  | 'agent_started'
  | 'agent_stopped'
  | 'metrics_damaged';

export interface ActorIn {
  actor?: string | null;
}

export interface ActorRequest {
  actor?: string | null;
}

export interface AliasIn {
  version: number;
  actor?: string | null;
}

export interface AuditCheck {
  ok: boolean;
  records: number;
  broken_at: number | null;
  problem: string | null;
  /** hash of the last record: keep it elsewhere to detect a rewritten chain */
  head: string | null;
}

export interface AuditOut {
  seq: number;
  ts: string;
  /** who: the token's name (or, for the owner token, the user it names) */
  actor: string;
  /** the token used; null for the agent's own actions (gates, restarts) */
  token: string | null;
  /** the client's address */
  source: string | null;
  action: string;
  deployment: string | null;
  version: number | null;
  /** the live version before the change */
  before: number | null;
  /** the live version after it */
  after: number | null;
  detail: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

/**
 * Ray Serve's autoscaler for a Ray version; a field left out keeps its current value (or its
 * default).
 */
export interface AutoscalingIn {
  /** the fewest replicas (0: none when idle) */
  min?: number | null;
  /** the most replicas */
  max?: number | null;
  /** requests in flight per replica the autoscaler aims for */
  target_ongoing_requests?: number | null;
  /** e.g. "30s": how long load stays low before a replica is removed */
  downscale_delay?: string | number | null;
}

export interface AutoscalingOut {
  min: number;
  max: number;
  target_ongoing_requests: number;
  downscale_delay: string | number;
}

/** BentoML's adaptive batching; a field left out keeps its current value (or BentoML's default). */
export interface BatchingIn {
  /** rows in one model call */
  max_batch_size?: number | null;
  /** the longest a request may wait for its batch's answer; past it the request is answered 503 */
  max_latency_ms?: number | null;
}

export interface BatchingOut {
  max_batch_size: number;
  max_latency_ms: number;
}

export interface CanaryRequest {
  percent: number;
  actor?: string | null;
}

export interface ConfigUpdate {
  /** capture, sample_rate, sample_budget_per_minute, drift, drift_window */
  settings: Record<string, unknown>;
  actor?: string | null;
}

export interface DeployRequest {
  /** an archive sent with POST /v1/uploads */
  upload_id?: string | null;
  /** Path of an exported Bento archive on the agent's host (owner token only) */
  archive_path?: string | null;
  stable_port?: number | null;
  remove_archive?: boolean;
  actor?: string | null;
  /** percent of requests for the new version */
  canary?: number | null;
  /** mirror live traffic to the new version; never answer from it */
  shadow?: boolean;
  /** promote once the gates pass for their window */
  auto_promote?: boolean;
  /** do not replay the reference sample before traffic */
  skip_parity?: boolean;
  /** canary routing by a hash of this header's value */
  sticky_header?: string | null;
  /**
   * workers, memory, cpus, idle_timeout, batching, autoscaling and engine (local or ray): set on
   * the deployment before this version starts
   */
  serving?: Record<string, unknown> | null;
}

/** One deployment as a list shows it, with its figures: what a panel polls. */
export interface DeploymentBrief {
  name: string;
  status: 'serving' | 'starting' | 'restarting' | 'failed' | 'stopped' | 'cold';
  live_version: number | null;
  /** the stable URL */
  url: string | null;
  versions: VersionBrief[];
  rollout: RolloutBrief | null;
  /** named versions: <url>/v/<alias>/... */
  aliases: Record<string, number>;
  /** the last 5 minutes (GET .../summary); null: it could not be read */
  summary: SummaryOut | null;
  /** its newest event's id: fetch events when it moves */
  latest_event_id: number | null;
  /** its row of GET /v1/resources */
  resources: ResourceRow | null;
}

export interface DeploymentOut {
  name: string;
  /** the stable URL: a BentoML-compatible service base URL */
  url: string | null;
  status: 'serving' | 'starting' | 'restarting' | 'failed' | 'stopped' | 'cold';
  live_version: number | null;
  latest_version: number | null;
  created_at: string;
  keep_warm: number;
  /** the canary or shadow under way: mode, version, percent, started_at, auto_promote */
  rollout?: Record<string, unknown> | null;
  /** named versions: <url>/v/<alias>/... */
  aliases?: Record<string, number>;
  versions: VersionOut[];
}

export interface DriftFlag {
  /** dataset drift over the drift window; null: too little traffic */
  drifted: boolean | null;
  share: number | null;
  features: number;
  rows: number;
}

export interface DriftOut {
  version?: number | null;
  /** one row per feature: method, score, threshold, drifted, ... */
  report: Record<string, unknown>[];
  dataset_drift: boolean;
  drift_share: number;
  drifted_features: number;
  /** features evaluated (the denominator of drift_share) */
  features: number;
  n_reference: number;
  n_current: number;
}

export interface EnvironmentOut {
  /** its key: a hash of the Python and the pins */
  environment: string;
  path: string;
  python?: string | null;
  /** the pins it was built for */
  packages?: string[];
  /** what the generated service needs beside them */
  serving?: string[];
  /**
   * disk it holds of its own: files not hard-linked with uv's cache or another environment (its
   * bytecode, its scripts)
   */
  bytes?: number | null;
  /** everything in it, each file once, shared ones included */
  total_bytes?: number | null;
  /** how long it took to build */
  seconds?: number | null;
  created_at?: number | null;
  used_at?: number | null;
  /** a build that did not finish (prune removes it) */
  incomplete?: boolean;
  /** versions whose pins need it: deployment, version, status, running */
  versions?: Record<string, unknown>[];
}

export interface ErrorBody {
  /** The nbserve exception class, e.g. DeploymentNotFound */
  type: string;
  message: string;
  hint?: string | null;
  details?: Record<string, unknown>;
}

export interface ErrorResponse {
  error: ErrorBody;
}

export interface EventOut {
  id: number;
  ts: string;
  deployment: string | null;
  version: number | null;
  /** one of nbserve._events.Event (an older or newer agent may write others) */
  kind: string;
  /**
   * error: something failed; warning: it serves, but traffic was taken away or a setting wants
   * changing; else info
   */
  severity: 'info' | 'warning' | 'error';
  message: string;
  actor: string | null;
  data: Record<string, unknown>;
}

export interface FeedbackIn {
  /** prediction ids: "<x-request-id>:<row>" (or the bare id of a one-row request) */
  ids: string[];
  /** the real outcome of each, in the same order */
  y_true: unknown[];
}

export interface FeedbackOut {
  received: number;
  stored: number;
  /** labels that replaced an earlier one for the same row */
  updated: number;
  /** no sampled prediction has that id (or row) */
  unknown: number;
  /** the same id twice in this batch: the first was kept */
  duplicate: number;
  /** not a number, string or boolean */
  invalid: number;
  /** up to 5 ids of each problem */
  examples: Record<string, string[]>;
}

export interface Health {
  status: 'ok';
  version: string;
  pid: number;
  home: string;
  deployments: number;
}

export interface LatencyRow {
  /** start of the minute, unix seconds (UTC) */
  time: number;
  /** with by_version=true; 0: no version served */
  version?: number | null;
  requests: number;
  /** 5xx answers */
  errors: number;
  /** 4xx answers (e.g. 422 schema mismatches) */
  client_errors: number;
  /** errors / requests */
  error_rate: number | null;
  rps: number;
  /** payload rows */
  rows: number;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  mean_ms: number | null;
}

export interface LogsOut {
  deployment: string;
  version: number;
  path: string;
  text: string;
}

export interface NewTokenOut {
  id: string;
  name: string;
  role: string;
  deployments: string[] | null;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  state: 'active' | 'expired' | 'revoked';
  /** the secret: shown once, never stored by the agent */
  token: string;
}

export interface PruneOut {
  removed: Record<string, unknown>[];
  /** environments versions need, with those versions */
  kept: Record<string, unknown>[];
}

export interface QualityFlag {
  /** accuracy (classifiers) or rmse (regressors) */
  metric: string | null;
  /** the live version's figure in its newest hour with labels */
  value: number | null;
  /** the hour before, for the trend */
  previous: number | null;
  labelled: number;
  task: string | null;
}

export interface QualityOut {
  /** classification or regression */
  task: string | null;
  /** labelled rows in the window */
  labelled: number;
  /** per bucket and version: time, version, labelled, metrics */
  rows: Record<string, unknown>[];
}

export interface ReplicaOut {
  version: number;
  /** Ray's actor state: ALIVE, PENDING_CREATION, RESTARTING, DEAD */
  state: string;
  /** the Ray node it runs on */
  node: string | null;
  pid: number | null;
  /** its resident memory, when it runs on the agent's host */
  rss_bytes?: number | null;
  /** its CPU since the agent last looked (100 = one core), when on the agent's host */
  cpu_percent?: number | null;
}

/** A failure the client saw before the agent was involved (e.g. the Bento build). */
export interface ReportRequest {
  kind: 'build_failed';
  message: string;
  actor?: string | null;
}

export interface ResourceRow {
  deployment: string;
  state: 'warm' | 'cold' | 'stopped' | 'starting';
  live_version: number | null;
  /** bentoml serve processes (live, warm, canary) */
  servers: number;
  /** workers per server */
  workers: number;
  cpu_percent: number;
  rss_bytes: number;
  processes: number;
  memory_cap: number | null;
  cpus_cap: number | null;
  /** cgroup-v2, cgroup-v1 or watchdog, when a cap is set */
  enforcement: string | null;
  idle_timeout: string | null;
  /** adaptive batching settings, when on */
  batching?: BatchingOut | null;
  /** since the last request through the stable URL */
  idle_seconds: number | null;
  /** connections waiting for a cold deployment to start */
  held: number;
  /** how long the last start from zero took */
  last_cold_start_seconds?: number | null;
  /**
   * where its servers run: 'agent' (the agent's own environment) or the keys of their own under
   * NBSERVE_HOME/envs
   */
  environments?: string[];
  /**
   * where its versions run: local (bentoml serve), shared (a shared model server), ray, or two
   * joined by + (a canary on one, the live version on the other)
   */
  engine?: string;
  /** Ray Serve's autoscaler, when on */
  autoscaling?: AutoscalingOut | null;
  /** on the Ray engine: each replica of its running versions */
  replicas?: ReplicaOut[];
  /** on the shared engine: each running version's model in its shared server */
  models?: SharedModelOut[];
}

export interface RollbackRequest {
  /** version number; default: the previous */
  to?: number | null;
  actor?: string | null;
}

/** The canary or shadow under way as the deployment has it (figures: GET .../rollout). */
export interface RolloutBrief {
  mode: 'canary' | 'shadow';
  version: number;
  /** share of new requests (canary); null for a shadow */
  percent: number | null;
  /** unix seconds */
  started_at: number | null;
  auto_promote: boolean;
  sticky_header?: string | null;
}

export interface RolloutOut {
  mode: 'canary' | 'shadow';
  version: number;
  percent: number | null;
  sticky_header?: string | null;
  auto_promote: boolean;
  started_at: number;
  started_by?: string | null;
  gates: Record<string, unknown>;
  /** requests, p50_ms, p99_ms, error_rate, drift_share, age_seconds */
  figures: Record<string, unknown>;
  verdict: 'waiting' | 'pass' | 'breach';
  reasons: string[];
}

export interface RunOut {
  id: number;
  schedule: string;
  deployment: string;
  trigger: 'cron' | 'manual' | 'missed';
  status: 'running' | 'succeeded' | 'failed' | 'timed_out' | 'skipped';
  /** the cron due time it ran for (null for manual runs) */
  due_at: string | null;
  started_at: string;
  finished_at: string | null;
  duration_seconds: number | null;
  parameters: Record<string, unknown>;
  /** the notebook papermill executed (nbformat) */
  executed_notebook: string | null;
  /** papermill's log of the run */
  log_path: string | null;
  /** the version of the deployment this run produced */
  version: number | null;
  /** why it produced no version, was skipped or stopped */
  reason: string | null;
  /** the notebook's error, e.g. 'ValueError: ...' (cell N) */
  error: string | null;
  actor: string | null;
}

export interface ScaleRequest {
  workers?: number | null;
  /** a cap such as "1G"; "none" removes it */
  memory?: string | number | null;
  /** cores, e.g. 1.5; "none" removes the cap */
  cpus?: number | string | null;
  /** e.g. "15m"; "none": never scale to zero */
  idle_timeout?: string | null;
  /** true/settings: turn adaptive batching on or change it; false: off */
  batching?: boolean | BatchingIn | null;
  /** true/settings: Ray Serve's autoscaler on (a Ray version) or changed; false: off */
  autoscaling?: boolean | AutoscalingIn | null;
  /**
   * move the live version to this engine (local: a server of its own; shared: a shared model
   * server; ray) without dropping a request; later versions run there too
   */
  engine?: 'local' | 'shared' | 'ray' | null;
  actor?: string | null;
}

/** A schedule with its newest run, as a list shows it. */
export interface ScheduleBrief {
  name: string;
  deployment: string;
  notebook: string;
  cron: string;
  timezone: string;
  parameters: Record<string, unknown>;
  timeout_seconds: number;
  missed: 'skip' | 'run_once';
  paused: boolean;
  created_by: string | null;
  created_at: string;
  /** next due time (UTC); ignored while paused */
  next_run_at: string | null;
  last_run_at: string | null;
  /** the Jupyter kernel its runs use */
  kernel: string;
  /** id of the run in progress, if any */
  running_run: number | null;
  last_run: RunOut | null;
}

export interface ScheduleIn {
  /** the schedule's name (unique); also the deployment unless `deployment` is set */
  name: string;
  /** the deployment it retrains (default: name) */
  deployment?: string | null;
  /** absolute path of the notebook on the agent's host */
  notebook: string;
  /** cron expression, five fields (croniter), e.g. '0 3 * * *' */
  cron: string;
  /** IANA time zone the cron expression is read in */
  timezone?: string;
  /** papermill parameters (JSON values) */
  parameters?: Record<string, unknown>;
  /** seconds before a run is stopped (whole process tree) as timed_out */
  timeout?: number;
  /** due times missed while the agent was down: run once, or skip */
  missed?: 'skip' | 'run_once';
  /**
   * Jupyter kernel the runs use (one the agent has); default: the notebook's own (its kernelspec
   * metadata), else python3
   */
  kernel?: string | null;
  actor?: string | null;
}

export interface ScheduleOut {
  name: string;
  deployment: string;
  notebook: string;
  cron: string;
  timezone: string;
  parameters: Record<string, unknown>;
  timeout_seconds: number;
  missed: 'skip' | 'run_once';
  paused: boolean;
  created_by: string | null;
  created_at: string;
  /** next due time (UTC); ignored while paused */
  next_run_at: string | null;
  last_run_at: string | null;
  /** the Jupyter kernel its runs use */
  kernel: string;
  /** id of the run in progress, if any */
  running_run: number | null;
}

export interface SharedModelOut {
  version: number;
  /** the shared model server it runs in (its environment and worker count) */
  server: string;
  /** its model is in the server's memory now (else its next request loads it) */
  loaded: boolean;
  /** what loading its model added to the server's RSS */
  memory_bytes?: number | null;
  /** requests it answered since its model was last loaded */
  requests?: number;
  /** times its model was loaded (more than one: it was evicted) */
  loads?: number;
  /** times the server's LRU unloaded it to make room */
  evictions?: number;
  /** how long its last load took */
  load_seconds?: number | null;
}

/** Everything a panel's periodic poll needs, in one request. */
export interface StateOut {
  /** those the token sees */
  deployments: DeploymentBrief[];
  /**
   * every schedule, for a token that may list them (GET /v1/schedules); [] for a token limited to
   * some deployments
   */
  schedules: ScheduleBrief[];
}

export interface SummaryOut {
  window_seconds: number;
  requests: number;
  rps: number;
  p50_ms: number | null;
  p99_ms: number | null;
  error_rate: number | null;
  /** request rate per minute, last 30 minutes, oldest first */
  sparkline: number[];
  drift: DriftFlag;
  quality: QualityFlag;
  /**
   * requests per wire format since the agent started: bentoml (/predict and the other API routes),
   * v2 (Open Inference), mlflow (/invocations), openai (/v1/embeddings)
   */
  protocols?: Record<string, number>;
}

/** A pandas DataFrame in ``orient="split"`` form (without the index). */
export interface TableOut {
  columns: string[];
  data: unknown[][];
}

export interface TickIn {
  /** the instant to fire at (ISO 8601; naive means UTC); default: the agent's clock */
  now?: string | null;
}

export interface TokenCreate {
  name: string;
  role: 'admin' | 'deployer' | 'viewer' | 'predict';
  /** limit the token to these deployments (default: all) */
  deployments?: string[] | null;
  /** seconds until it expires; null: never */
  expires_in?: number | null;
}

export interface TokenOut {
  id: string;
  name: string;
  role: string;
  deployments: string[] | null;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  state: 'active' | 'expired' | 'revoked';
}

export interface TokenRotate {
  /** seconds the old secret keeps working (default: it stops now) */
  grace?: number;
}

export interface UploadOut {
  upload_id: string;
  size: number;
  sha256: string;
}

export interface VersionBrief {
  number: number;
  status: 'starting' | 'live' | 'warm' | 'canary' | 'shadow' | 'stopped' | 'failed';
}

export interface VersionOut {
  deployment: string;
  number: number;
  created_at: string;
  created_by: string | null;
  bento_tag: string;
  status: 'starting' | 'live' | 'warm' | 'canary' | 'shadow' | 'stopped' | 'failed';
  error: string | null;
  /** a serving process of this version is up */
  running: boolean;
  /** that process passed its health check and can take traffic */
  ready: boolean;
  /** the version's own server, for debugging */
  upstream_url: string | null;
  /**
   * where its server runs: 'agent' (the agent's own environment) or the key of its own under
   * NBSERVE_HOME/envs; null when not running
   */
  environment?: string | null;
  /** while its environment is being built: python, packages, and how the agent's own differs */
  preparing?: Record<string, unknown> | null;
  /**
   * the engine it runs on (local, shared, ray): where it was moved (scale(engine=...)), else where
   * it was deployed (metadata.engine)
   */
  engine?: string | null;
  /** schema, model, provenance, description */
  metadata: Record<string, unknown>;
}

export interface WhoAmI {
  name: string;
  role: 'admin' | 'deployer' | 'viewer' | 'predict';
  deployments: string[] | null;
}
