/**
 * The only module that talks to the server: the nbserve server extension's REST routes
 * under `<base>/nbserve/api`. Requests go through `ServerConnection.makeRequest`, which
 * adds Jupyter's token and XSRF header; the agent's own token never reaches the page.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IVersionBrief {
  number: number;
  status: string;
}

export interface IDriftSummary {
  drifted: boolean | null;
  share: number | null;
  features: number;
}

/**
 * The live version's quality from real outcomes (sent with `dep.feedback`): its headline
 * metric in the newest hour with labels, and the hour before it (the trend).
 */
export interface IQualitySummary {
  /** "accuracy" (classifiers), "rmse" (regressors), or null: no labels yet. */
  metric: string | null;
  value: number | null;
  previous: number | null;
  /** Labelled predictions behind `value`. */
  labelled: number;
  task: string | null;
}

export interface ISummary {
  requests: number;
  rps: number;
  p50_ms: number | null;
  p99_ms: number | null;
  error_rate: number | null;
  sparkline: number[];
  drift: IDriftSummary | null;
  /** Absent from agents older than quality tracking. */
  quality?: IQualitySummary | null;
}

/** A canary or shadow under way, as the deployment's snapshot has it. */
export interface IRolloutBrief {
  mode: 'canary' | 'shadow';
  version: number;
  /** Share of new requests (canary); null for a shadow. */
  percent: number | null;
  /** Unix seconds. */
  started_at: number | null;
  auto_promote: boolean;
  sticky_header?: string | null;
}

export interface IShadowFigures {
  version?: number;
  compared: number;
  differing: number;
  difference_rate: number | null;
  errors: number;
  error_rate: number | null;
  max_abs_diff?: number | null;
  p50_ms?: number | null;
  p99_ms?: number | null;
  last_error?: string | null;
  [key: string]: unknown;
}

export interface IRolloutFigures {
  requests?: number;
  p50_ms?: number | null;
  p99_ms?: number | null;
  error_rate?: number | null;
  drift_share?: number | null;
  age_seconds?: number | null;
  shadow?: IShadowFigures | null;
  [key: string]: unknown;
}

/** The rollout with its gates, figures so far and the gates' verdict (the detail route). */
export interface IRollout extends IRolloutBrief {
  started_by?: string | null;
  gates: Record<string, number | string | null>;
  figures: IRolloutFigures;
  verdict: 'waiting' | 'pass' | 'breach';
  reasons: string[];
}

export interface IDeploymentState {
  name: string;
  status: string;
  version: number | null;
  url: string | null;
  versions: IVersionBrief[];
  rollout: IRolloutBrief | null;
  /** Named versions (alias -> number); each answers at `<url>/v/<alias>/...`. */
  aliases?: Record<string, number>;
}

/**
 * A deployment's resources now, as `nbserve.top()` has them: one row of the agent's
 * `/v1/resources`. Absent (null) when the agent could not answer it.
 */
export interface IResources {
  /** "cold": scaled to zero, the next request starts it. */
  state: 'warm' | 'cold' | 'stopped' | 'starting';
  live_version: number | null;
  /** `bentoml serve` processes: live, warm and canary versions. */
  servers: number;
  /** Workers per server. */
  workers: number;
  cpu_percent: number;
  rss_bytes: number;
  processes: number;
  /** Bytes; null: no cap. */
  memory_cap: number | null;
  /** Cores; null: no cap. */
  cpus_cap: number | null;
  /** How the caps are enforced: "cgroup-v2", "cgroup-v1" or "watchdog"; null without caps. */
  enforcement: string | null;
  /** e.g. "15m"; null: never scaled to zero. */
  idle_timeout: string | null;
  /** Since the last request through the stable URL; null: none yet. */
  idle_seconds: number | null;
  /** Connections waiting for a cold deployment to start. */
  held: number;
  /** BentoML's adaptive batching; null: off. Absent from agents older than batching. */
  batching?: IBatching | null;
}

/** Adaptive batching's two knobs. */
export interface IBatching {
  /** The most rows merged into one model call. */
  max_batch_size: number;
  /** The longest a request may wait for its batch to be answered; past it, a 503. */
  max_latency_ms: number;
}

/**
 * What `POST .../scale` changes; "none" removes a cap or the idle timeout. `batching`: false
 * turns it off, true on (current or default knobs), an object changes the knobs it names
 * and turns it on.
 */
export interface IScaleChanges {
  workers?: number;
  memory?: string | number;
  cpus?: number | string;
  idle_timeout?: string;
  batching?: boolean | Partial<IBatching>;
}

export interface IDeploymentBrief extends IDeploymentState {
  summary: ISummary | null;
  /** The id of its newest event: the panel fetches events only when this moves. */
  latest_event_id?: number | null;
  /** Absent from server extensions older than scaling; null when the agent could not say. */
  resources?: IResources | null;
}

export interface IScheduleRun {
  id: number;
  trigger: string;
  status: string;
  due_at: string | null;
  started_at: string | null;
  finished_at?: string | null;
  duration_seconds: number | null;
  version: number | null;
  reason: string | null;
  error: string | null;
  parameters: Record<string, unknown> | null;
  executed_notebook: string | null;
  /** The executed notebook relative to the Jupyter server's root, when it is under it. */
  executed_notebook_lab_path: string | null;
  [key: string]: unknown;
}

/** A schedule as the agent answers a change to it. */
export interface IScheduleInfo {
  name: string;
  deployment: string;
  notebook: string;
  cron: string;
  timezone: string;
  parameters: Record<string, unknown>;
  timeout_seconds: number;
  missed: string;
  kernel: string;
  paused: boolean;
  next_run_at: string | null;
  last_run_at: string | null;
  running_run: number | null;
  [key: string]: unknown;
}

/** A schedule with its last run, as lists show it. */
export interface ISchedule extends IScheduleInfo {
  last_run: IScheduleRun | null;
}

export interface IScheduleDetail extends ISchedule {
  runs: IScheduleRun[];
}

/**
 * One deployment as the agent's `GET /v1/state` has it (`DeploymentBrief` in
 * docs/openapi.json), passed through by the server extension as it is.
 */
export interface IStateDeployment {
  name: string;
  status: string;
  live_version: number | null;
  url: string | null;
  versions: IVersionBrief[];
  rollout: IRolloutBrief | null;
  aliases: Record<string, number>;
  summary: ISummary | null;
  latest_event_id: number | null;
  resources: (IResources & { deployment: string }) | null;
}

/**
 * What the panel polls, in one request (`StateOut` in docs/openapi.json): every deployment
 * the agent's token sees and every schedule with its last run.
 */
export interface IPanelState {
  deployments: IStateDeployment[];
  schedules: ISchedule[];
}

/** A deployment of the poll as the panel's views read it (`version`: the live one). */
export function deploymentBrief(dep: IStateDeployment): IDeploymentBrief {
  return { ...dep, version: dep.live_version };
}

export interface IHistoryRow {
  version: number;
  status: string;
  live: boolean;
  created_at: string | null;
  created_by: string | null;
  model: string | null;
  notebook: string | null;
  cell: number | null;
  cell_sha256: string | null;
  description: string | null;
  bento: string | null;
  error: string | null;
}

export interface IEvent {
  id?: number;
  ts: string;
  kind: string;
  /** error: something failed; warning: it serves, but traffic was taken away or a setting wants changing. */
  severity?: 'info' | 'warning' | 'error';
  version?: number | null;
  message?: string | null;
  actor?: string | null;
  [key: string]: unknown;
}

export interface IDeploymentDetail extends IDeploymentState {
  rollout: IRollout | null;
  history: IHistoryRow[];
  events: IEvent[];
  summary?: ISummary | null;
  resources?: IResources | null;
}

/** A version's model card: HTML (sanitized before it is shown) and Markdown. */
export interface IModelCard {
  html: string;
  markdown: string;
  version: number;
}

/** One record of the agent's append-only, hash-chained audit log. */
export interface IAuditRecord {
  seq: number;
  /** ISO 8601, UTC. */
  ts: string;
  /** Who: the token's name (for the host's owner token, the user it named), or "agent". */
  actor: string;
  /** The token used; null for the agent's own actions (gates, restarts). */
  token: string | null;
  /** The client's address. */
  source: string | null;
  action: string;
  deployment: string | null;
  version: number | null;
  /** The live version before the change, and after it. */
  before: number | null;
  after: number | null;
  detail: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

/** The agent's check of the whole audit log's hash chain. */
export interface IAuditChain {
  /** null: not checked (the reason is in `unavailable`). */
  ok: boolean | null;
  records: number | null;
  broken_at: number | null;
  problem: string | null;
  head: string | null;
  unavailable?: { type: string; message: string; hint: string | null } | null;
}

export interface IAudit {
  /** Oldest first. */
  records: IAuditRecord[];
  chain: IAuditChain;
}

export interface ILogs {
  version: number | null;
  text: string;
}

export interface ILatencyPoint {
  /** The minute's start, unix seconds (UTC). */
  time: number;
  requests: number;
  errors: number;
  error_rate: number | null;
  rps: number;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  mean_ms: number | null;
}

export interface IDriftFeature {
  feature: string;
  kind: string;
  method: string;
  score: number | null;
  threshold: number | null;
  drifted: boolean | null;
  [key: string]: unknown;
}

export interface IMetrics {
  window: string;
  summary: ISummary | null;
  latency: ILatencyPoint[] | null;
  drift: {
    features: IDriftFeature[];
    dataset_drift: boolean | null;
    drift_share: number | null;
    /** Why there is no drift report yet (e.g. too little traffic), as the agent says it. */
    unavailable?: { type: string; message: string; hint: string | null } | null;
  } | null;
}

/** An error answered by the server extension: the agent's type, message and hint. */
export class NbserveApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly hint: string | null = null
  ) {
    super(message);
    this.name = type;
  }

  /** The message with its hint, as shown to the user. */
  get text(): string {
    return this.hint ? `${this.message} (${this.hint})` : this.message;
  }
}

/** A typed client for the server extension. */
export class NbserveAPI {
  constructor(readonly settings: ServerConnection.ISettings) {}

  list(): Promise<IDeploymentBrief[]> {
    return this.request('deployments');
  }

  /** Deployments and schedules in one request: what the panel polls. */
  state(): Promise<IPanelState> {
    return this.request('state');
  }

  detail(name: string, events = 50): Promise<IDeploymentDetail> {
    return this.request(`deployments/${enc(name)}?events=${events}`);
  }

  history(name: string): Promise<IHistoryRow[]> {
    return this.request(`deployments/${enc(name)}/history`);
  }

  events(name: string, limit = 200): Promise<IEvent[]> {
    return this.request(`deployments/${enc(name)}/events?limit=${limit}`);
  }

  /** The deployment's newest `limit` audit records (oldest first) and the chain check. */
  audit(name: string, limit = 200): Promise<IAudit> {
    return this.request(`deployments/${enc(name)}/audit?limit=${limit}`);
  }

  /** A version's model card (default: the live version's). */
  card(name: string, version: number | null = null): Promise<IModelCard> {
    const query = version === null ? '' : `?version=${version}`;
    return this.request(`deployments/${enc(name)}/card${query}`);
  }

  logs(name: string, version: number | null = null, lines = 200): Promise<ILogs> {
    const query = version === null ? '' : `&version=${version}`;
    return this.request(`deployments/${enc(name)}/logs?lines=${lines}${query}`);
  }

  metrics(name: string, window = '1h'): Promise<IMetrics> {
    return this.request(`deployments/${enc(name)}/metrics?window=${enc(window)}`);
  }

  rollback(name: string, to: number | null): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/rollback`, { to });
  }

  stop(name: string): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/stop`, {});
  }

  start(name: string): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/start`, {});
  }

  promote(name: string): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/promote`, {});
  }

  abort(name: string): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/abort`, {});
  }

  setCanary(name: string, percent: number): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/canary`, { percent });
  }

  /** Change workers, caps, batching or the idle timeout; the live server is replaced without dropping a request. */
  scale(name: string, changes: IScaleChanges): Promise<IDeploymentState> {
    return this.post(`deployments/${enc(name)}/scale`, changes);
  }

  schedules(): Promise<ISchedule[]> {
    return this.request('schedules');
  }

  schedule(name: string, runs = 50): Promise<IScheduleDetail> {
    return this.request(`schedules/${enc(name)}?runs=${runs}`);
  }

  runSchedule(name: string): Promise<IScheduleRun> {
    return this.post(`schedules/${enc(name)}/run`, {});
  }

  /** The schedule as the agent answers it (without its last run). */
  pauseSchedule(name: string): Promise<IScheduleInfo> {
    return this.post(`schedules/${enc(name)}/pause`, {});
  }

  resumeSchedule(name: string): Promise<IScheduleInfo> {
    return this.post(`schedules/${enc(name)}/resume`, {});
  }

  private post<T>(path: string, body: unknown): Promise<T> {
    return this.request(path, { method: 'POST', body: JSON.stringify(body) });
  }

  private async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'nbserve', 'api', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new NbserveApiError(
        0,
        'NetworkError',
        'cannot reach the Jupyter server',
        String(error)
      );
    }
    const text = await response.text();
    let data: any = null;
    if (text.length > 0) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!response.ok) {
      const error = data && typeof data === 'object' ? data.error : null;
      if (error && typeof error === 'object') {
        throw new NbserveApiError(
          response.status,
          error.type ?? 'Error',
          error.message ?? response.statusText,
          error.hint ?? null
        );
      }
      const message =
        (data && typeof data === 'object' && (data.message || data.reason)) ||
        `${response.status} ${response.statusText}`;
      throw new NbserveApiError(response.status, 'HTTPError', String(message));
    }
    return data as T;
  }
}

function enc(value: string): string {
  return encodeURIComponent(value);
}

/** Any thrown value as an NbserveApiError. */
export function asApiError(error: unknown): NbserveApiError {
  if (error instanceof NbserveApiError) {
    return error;
  }
  return new NbserveApiError(0, 'Error', String((error as any)?.message ?? error));
}
