/**
 * What the panel's one-item views (a deployment's detail, a schedule's) share: open one item by
 * name, reload it whenever the list's poll shows it changed (or its load grew too old), close when
 * the user goes back or the item is gone, drop loads that finish after the user moved on, and
 * render under the same toolbar and error banner. Each view says how to load and draw its item.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { NbserveApiError } from './api';
import { button, h } from './dom';
import { DeploymentsModel } from './model';

export abstract class ReloadingView<TBrief, TLoaded> extends Widget {
  constructor(readonly model: DeploymentsModel) {
    super();
    this.addClass('nbserve-Detail');
    model.changed.connect(this._onListChanged, this);
  }

  /** Emitted when the user goes back to the list (or the item is gone). */
  get closed(): ISignal<this, void> {
    return this._closed;
  }

  /** The item shown, null once closed. */
  get name(): string | null {
    return this._name;
  }

  /** Show an item (loads it). */
  async open(name: string): Promise<void> {
    if (name !== this._name) {
      this._name = name;
      this.loadError = null;
      this.forget();
      this.node.replaceChildren(h('div', { class: 'nbserve-empty', text: `Loading ${name}…` }));
    }
    await this.reload();
  }

  close(): void {
    this._name = null;
    this._closed.emit();
  }

  async reload(): Promise<void> {
    const name = this._name;
    if (!name) {
      return;
    }
    this._loadedAt = Date.now();
    this._stamp = this.stamp(this.brief(name));
    const loaded = await this.fetch(name);
    if (name !== this._name) {
      return; // the user moved on meanwhile
    }
    await this.keep(loaded);
  }

  render(): void {
    const name = this._name;
    if (!name) {
      return;
    }
    const scroll = this.node.scrollTop;
    const back = button('‹ All deployments', () => this.close(), 'nbserve-back', 'Back to the list');
    const children: (HTMLElement | null)[] = [h('div', { class: 'nbserve-toolbar' }, back)];
    const error = this.loadError;
    if (error) {
      children.push(h('div', { class: 'nbserve-error-banner', text: error.text, data: { type: error.type } }));
    }
    children.push(...this.body(name));
    this.node.replaceChildren(...children.filter((c): c is HTMLElement => c !== null));
    this.node.dataset.name = name;
    this.node.scrollTop = scroll;
    this.onRendered();
  }

  /** The item as the list's poll last saw it; undefined when the list does not have it. */
  protected abstract brief(name: string): TBrief | undefined;

  /** What of the brief, once it changes, means the loaded item is out of date. */
  protected abstract stamp(brief: TBrief | undefined): string;

  /** Drop what was loaded of the item shown before (another one opens). */
  protected abstract forget(): void;

  /** Load the item. Settle rather than throw: a failed request is something keep() shows. */
  protected abstract fetch(name: string): Promise<TLoaded>;

  /** Keep a load of the item still open (set loadError from it) and render. */
  protected abstract keep(loaded: TLoaded): void | Promise<void>;

  /** What goes under the toolbar and the error banner. */
  protected abstract body(name: string): (HTMLElement | null)[];

  /** How old a load may get (ms) before a poll reloads it though nothing changed. */
  protected maxAge(brief: TBrief | undefined): number {
    return Infinity;
  }

  /** On every poll while open: update in place what moves too often to reload for. */
  protected onPoll(brief: TBrief | undefined): void {
    // nothing by default
  }

  /** After each render: mark the node with what the view shows. */
  protected onRendered(): void {
    // nothing by default
  }

  /** Why the item's own load failed, shown in the error banner; null when it loaded. */
  protected loadError: NbserveApiError | null = null;

  private _onListChanged(): void {
    const name = this._name;
    if (!name || !this.isVisible || !this.model.loaded) {
      return;
    }
    const brief = this.brief(name);
    if (!brief && !this.model.error) {
      this.close(); // it is gone
      return;
    }
    this.onPoll(brief);
    if (this.stamp(brief) !== this._stamp || Date.now() - this._loadedAt > this.maxAge(brief)) {
      void this.reload();
    }
  }

  private _name: string | null = null;
  private _loadedAt = 0;
  private _stamp = '';
  private _closed = new Signal<this, void>(this);
}
