/**
 * The panel's state: one poll of the compact state endpoint (deployments and schedules,
 * the agent's `GET /v1/state` passed through: one agent request whatever their number),
 * every 2 s while the panel is visible, backing off exponentially on errors and slowing
 * down while it is hidden. Each deployment carries the id of its newest event: events are
 * fetched only when that id moves, and the new ones are emitted once each (`newEvents`).
 */
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import type { EventKind, EventOut } from './agentTypes';
import { IDeploymentBrief, ISchedule, NbserveAPI, NbserveApiError, asApiError, deploymentBrief } from './api';

/** Events a deployment produced since the panel last looked. */
export interface INewEvents {
  name: string;
  events: EventOut[];
}

/** How long an action's own outcome is not notified again by the poll (ms). */
const EXPECT_FOR = 60000;

const VISIBLE: IPoll.Frequency = { interval: 2000, backoff: true, max: 30000 };
const HIDDEN: IPoll.Frequency = { interval: 30000, backoff: true, max: 120000 };

export class DeploymentsModel implements IDisposable {
  constructor(readonly api: NbserveAPI) {
    this._poll = new Poll({
      auto: false,
      factory: () => this._fetch(),
      frequency: HIDDEN,
      name: 'nbserve:deployments',
      standby: 'when-hidden'
    });
  }

  /** Emitted after every poll, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when the poll starts failing (with the error) or recovers (with null). */
  get errorChanged(): ISignal<this, NbserveApiError | null> {
    return this._errorChanged;
  }

  /** Emitted with the events a deployment produced since the last poll (never older than the panel). */
  get newEvents(): ISignal<this, INewEvents> {
    return this._newEvents;
  }

  get deployments(): IDeploymentBrief[] {
    return this._deployments;
  }

  get schedules(): ISchedule[] {
    return this._schedules;
  }

  findSchedule(name: string): ISchedule | undefined {
    return this._schedules.find(s => s.name === name);
  }

  /**
   * The panel itself is about to cause an event of this kind (e.g. `promoted` by its own
   * Promote button): that action reports its outcome, so the poll does not notify it again.
   */
  expect(name: string, kind: EventKind): void {
    this._expected.set(`${name}\u0000${kind}`, Date.now() + EXPECT_FOR);
  }

  get loaded(): boolean {
    return this._loaded;
  }

  get error(): NbserveApiError | null {
    return this._error;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  find(name: string): IDeploymentBrief | undefined {
    return this._deployments.find(d => d.name === name);
  }

  /** Poll fast while the panel is visible, slowly while hidden; the first show starts it. */
  setVisible(visible: boolean): void {
    this._poll.frequency = visible ? VISIBLE : HIDDEN;
    if (visible && !this._started) {
      this._started = true;
      void this._poll.start();
    } else if (visible) {
      void this._poll.refresh();
    }
  }

  /** Poll now (after an action), and resolve when that poll is done. */
  async refresh(): Promise<void> {
    if (!this._started) {
      this._started = true;
      void this._poll.start();
    }
    await this._poll.refresh();
    await this._poll.tick.catch(() => undefined);
  }

  dispose(): void {
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _fetch(): Promise<void> {
    try {
      const state = await this.api.state(); // one request to the server, and one to the agent
      this._deployments = state.deployments.map(deploymentBrief);
      this._schedules = state.schedules;
      this._loaded = true;
      this._watchEvents(this._deployments);
      if (this._error !== null) {
        this._error = null;
        this._errorChanged.emit(null);
      }
      this._changed.emit();
    } catch (reason) {
      const error = asApiError(reason);
      const changed = this._error === null || this._error.message !== error.message;
      this._error = error;
      if (changed) {
        this._errorChanged.emit(error);
      }
      this._changed.emit();
      throw error; // the poll backs off
    }
  }

  /**
   * Compare each deployment's newest event id with the highest one seen. The first answer
   * only sets the baseline (nothing older than the panel is notified); a deployment that
   * appears later has its events since the panel started looked at.
   */
  private _watchEvents(deployments: IDeploymentBrief[]): void {
    const first = !this._baselined;
    this._baselined = true;
    for (const dep of deployments) {
      const latest = dep.latest_event_id;
      if (latest === null || latest === undefined) {
        continue;
      }
      const seen = this._seen.get(dep.name);
      if (first) {
        this._seen.set(dep.name, latest);
        continue;
      }
      if (seen !== undefined && latest <= seen) {
        continue;
      }
      this._seen.set(dep.name, latest); // before fetching: a concurrent poll does not fetch again
      void this._fetchEvents(dep.name, seen ?? null, latest);
    }
  }

  private async _fetchEvents(name: string, after: number | null, latest: number): Promise<void> {
    let events: EventOut[];
    try {
      events = await this.api.events(name, Math.min(50, after === null ? 50 : latest - after));
    } catch {
      if ((this._seen.get(name) ?? -1) === latest) {
        if (after === null) {
          this._seen.delete(name);
        } else {
          this._seen.set(name, after); // try again at the next poll
        }
      }
      return;
    }
    const fresh = events.filter(e => {
      if (typeof e.id !== 'number' || e.id > latest) {
        return false;
      }
      if (after !== null) {
        return e.id > after;
      }
      const ts = Date.parse(e.ts);
      return !isNaN(ts) && ts >= this._startedAt;
    });
    const now = Date.now();
    const shown = fresh.filter(e => {
      const key = `${name}\u0000${e.kind}`;
      const until = this._expected.get(key);
      if (until !== undefined && until >= now) {
        this._expected.delete(key);
        return false;
      }
      return true;
    });
    if (shown.length > 0) {
      this._newEvents.emit({ name, events: shown });
    }
  }

  private _poll: Poll;
  private _schedules: ISchedule[] = [];
  private _seen = new Map<string, number>();
  private _baselined = false;
  private _startedAt = Date.now();
  private _expected = new Map<string, number>();
  private _newEvents = new Signal<this, INewEvents>(this);
  private _started = false;
  private _loaded = false;
  private _deployments: IDeploymentBrief[] = [];
  private _error: NbserveApiError | null = null;
  private _changed = new Signal<this, void>(this);
  private _errorChanged = new Signal<this, NbserveApiError | null>(this);
}
