/**
 * The only module that talks to the server: the nbserve server extension's REST routes
 * under `<base>/nbserve/api`. Requests go through `ServerConnection.makeRequest`, which
 * adds Jupyter's token and XSRF header; the agent's own token never reaches the page.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  AuditCheck,
  AuditOut,
  DeploymentBrief,
  DeploymentOut,
  ErrorBody,
  EventOut,
  LatencyRow,
  LogsOut,
  ResourceRow,
  RolloutBrief,
  RolloutOut,
  RunOut,
  ScaleRequest,
  ScheduleBrief,
  ScheduleOut,
  StateOut,
  SummaryOut,
  VersionBrief
} from './agentTypes';

/*
 * Types. What the server extension passes through as the agent answers it is typed by
 * ./agentTypes.ts, generated from the agent's OpenAPI document (EventOut, SummaryOut,
 * ResourceRow, AuditOut, LatencyRow, LogsOut, ScheduleOut, StateOut's DeploymentBrief ...).
 * Hand-written below, and only these, because nbserve/_jupyter/_handlers.py reshapes them or
 * makes them itself:
 * - IDeploymentState, IDeploymentBrief, IDeploymentAnswer: every deployment it answers
 *   carries `version` (the live one) beside the agent's `live_version`;
 * - IHistoryRow: one row per version, made from the versions' metadata (nbserve/_history.py);
 * - IScheduleRun, ISchedule, IScheduleDetail, IPanelState: a run gains
 *   `executed_notebook_lab_path` (under Jupyter's root, which only the server knows);
 * - IDeploymentDetail, IMetrics, IAudit: several agent answers in one, and for the audit's
 *   chain check and the drift report the agent's error when it could not answer
 *   (IAuditChain, IMetrics' `drift`, its report rows as `features`);
 * - IModelCard: rendered by the server extension; IScaleChanges: the agent's ScaleRequest
 *   without `actor` (the server extension names the user).
 * Refined where the agent's schema leaves an object open: IRollout's `figures` and `gates`,
 * DeploymentOut's `rollout` (a RolloutBrief), and the drift report's rows (IDriftFeature).
 */

/** What every deployment the server extension answers has; `version` is the live one. */
export interface IDeploymentState {
  name: string;
  status: DeploymentBrief['status'];
  version: number | null;
  live_version: number | null;
  url: string | null;
  versions: VersionBrief[];
  rollout?: RolloutBrief | null;
  /** Named versions (alias -> number); each answers at `<url>/v/<alias>/...`. */
  aliases?: Record<string, number>;
}

/** A deployment of the poll (`GET /v1/state`) and of the list, with `version`. */
export type IDeploymentBrief = DeploymentBrief & { version: number | null };

/** A deployment as the agent answers a change (rollback, stop, canary, scale ...), with `version`. */
export type IDeploymentAnswer = Omit<DeploymentOut, 'rollout'> & {
  version: number | null;
  rollout?: RolloutBrief | null;
};

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
export type IRollout = Omit<RolloutOut, 'figures' | 'gates'> & {
  gates: Record<string, number | string | null>;
  figures: IRolloutFigures;
};

/**
 * What `POST .../scale` changes; "none" removes a cap or the idle timeout. `batching`: false
 * turns it off, true on (current or default knobs), an object changes the knobs it names
 * and turns it on.
 */
export type IScaleChanges = Omit<ScaleRequest, 'actor'>;

export type IScheduleRun = RunOut & {
  /** The executed notebook relative to the Jupyter server's root, when it is under it. */
  executed_notebook_lab_path: string | null;
};

/** A schedule with its last run, as the poll and the list have it. */
export type ISchedule = Omit<ScheduleBrief, 'last_run'> & { last_run: IScheduleRun | null };

export type IScheduleDetail = ScheduleOut & {
  last_run: IScheduleRun | null;
  /** Oldest first. */
  runs: IScheduleRun[];
};

/**
 * What the panel polls, in one request: the agent's `GET /v1/state` (every deployment its
 * token sees and every schedule with its last run), passed through.
 */
export type IPanelState = Omit<StateOut, 'schedules'> & { schedules: ISchedule[] };

/** A deployment of the poll as the panel's views read it (`version`: the live one). */
export function deploymentBrief(dep: DeploymentBrief): IDeploymentBrief {
  return { ...dep, version: dep.live_version };
}

/** One version of the history, as nbserve/_history.py makes it from the version's metadata. */
export interface IHistoryRow {
  version: number;
  status: VersionBrief['status'];
  live: boolean;
  created_at: string;
  created_by: string | null;
  model: string | null;
  /** what serves it: 'onnx' (compiled, parity-checked) or 'native' */
  runtime: string | null;
  notebook: string | null;
  cell: number | null;
  cell_sha256: string | null;
  description: string | null;
  intended_use: string | null;
  limitations: string | null;
  bento: string | null;
  error: string | null;
}

export type IDeploymentDetail = Omit<DeploymentOut, 'rollout'> & {
  version: number | null;
  rollout: IRollout | null;
  history: IHistoryRow[];
  events: EventOut[];
  summary: SummaryOut | null;
  resources: ResourceRow | null;
};

/** A version's model card: HTML (sanitized before it is shown) and Markdown. */
export interface IModelCard {
  html: string;
  markdown: string;
  version: number;
}

/** The agent's check of the whole audit log's hash chain, or (`ok` null) why it could not. */
export type IAuditChain =
  | (AuditCheck & { unavailable?: null })
  | { ok: null; records: null; broken_at: null; problem: null; head: null; unavailable: ErrorBody };

export interface IAudit {
  /** Oldest first. */
  records: AuditOut[];
  chain: IAuditChain;
}

/** One row of the agent's drift report (DriftOut's `report`). */
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
  summary: SummaryOut | null;
  latency: LatencyRow[];
  drift: {
    features: IDriftFeature[];
    dataset_drift: boolean | null;
    drift_share: number | null;
    /** Why there is no drift report yet (e.g. too little traffic), as the agent says it. */
    unavailable: ErrorBody | null;
  };
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

  events(name: string, limit = 200): Promise<EventOut[]> {
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

  logs(name: string, version: number | null = null, lines = 200): Promise<LogsOut> {
    const query = version === null ? '' : `&version=${version}`;
    return this.request(`deployments/${enc(name)}/logs?lines=${lines}${query}`);
  }

  metrics(name: string, window = '1h'): Promise<IMetrics> {
    return this.request(`deployments/${enc(name)}/metrics?window=${enc(window)}`);
  }

  rollback(name: string, to: number | null): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/rollback`, { to });
  }

  stop(name: string): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/stop`, {});
  }

  start(name: string): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/start`, {});
  }

  promote(name: string): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/promote`, {});
  }

  abort(name: string): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/abort`, {});
  }

  setCanary(name: string, percent: number): Promise<IDeploymentAnswer> {
    return this.post(`deployments/${enc(name)}/canary`, { percent });
  }

  /** Change workers, caps, batching or the idle timeout; the live server is replaced without dropping a request. */
  scale(name: string, changes: IScaleChanges): Promise<IDeploymentAnswer> {
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
  pauseSchedule(name: string): Promise<ScheduleOut> {
    return this.post(`schedules/${enc(name)}/pause`, {});
  }

  resumeSchedule(name: string): Promise<ScheduleOut> {
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
