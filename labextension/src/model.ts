/**
 * The panel's state: one poll of the compact list endpoint, every 2 s while the panel is
 * visible, backing off exponentially on errors and slowing down while it is hidden.
 */
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { IDeploymentBrief, NbserveAPI, NbserveApiError, asApiError } from './api';

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

  get deployments(): IDeploymentBrief[] {
    return this._deployments;
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
      this._deployments = await this.api.list();
      this._loaded = true;
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

  private _poll: Poll;
  private _started = false;
  private _loaded = false;
  private _deployments: IDeploymentBrief[] = [];
  private _error: NbserveApiError | null = null;
  private _changed = new Signal<this, void>(this);
  private _errorChanged = new Signal<this, NbserveApiError | null>(this);
}
