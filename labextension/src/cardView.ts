/**
 * A version's model card in JupyterLab's main area: what the model is, where it came from,
 * its input schema and how it has done so far. The card's HTML comes from the server
 * extension and goes through JupyterLab's HTML sanitizer before it reaches the page.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Clipboard, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { ToolbarButton, copyIcon, refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IModelCard, NbserveAPI, NbserveApiError, asApiError } from './api';
import { h } from './dom';
import { nbserveIcon } from './icons';

/** What the card needs of JupyterLab's sanitizer (the `ISanitizer` service or `new Sanitizer()`). */
export interface IHtmlSanitizer {
  sanitize(dirty: string): string;
}

export class ModelCardView extends Widget {
  constructor(
    readonly api: NbserveAPI,
    readonly name: string,
    readonly version: number | null,
    private readonly _sanitizer: IHtmlSanitizer
  ) {
    super();
    this.addClass('nbserve-CardView');
    this.node.dataset.name = name;
    this._body = h('div', { class: 'nbserve-card-body jp-RenderedHTMLCommon' });
    this.node.appendChild(this._body);
  }

  /** The card last loaded (null before the first answer, or after an error). */
  get card(): IModelCard | null {
    return this._card;
  }

  get error(): NbserveApiError | null {
    return this._error;
  }

  async load(): Promise<void> {
    this.node.dataset.state = 'loading';
    if (!this._card) {
      this._body.replaceChildren(h('div', { class: 'nbserve-empty', text: `Loading the model card of ${this.name}…` }));
    }
    try {
      this.render(await this.api.card(this.name, this.version));
    } catch (reason) {
      this._card = null;
      this._error = asApiError(reason);
      this._body.replaceChildren(h('div', { class: 'nbserve-error-banner', text: this._error.text, data: { type: this._error.type } }));
      this.node.dataset.state = 'error';
    }
  }

  /** Show a card (as the server extension answered it). */
  render(card: IModelCard): void {
    this._card = card;
    this._error = null;
    // sanitized: the card's text is the deployer's (descriptions, notebook paths, parameters)
    this._body.innerHTML = this._sanitizer.sanitize(card.html);
    this.node.dataset.version = String(card.version);
    this.node.dataset.state = 'loaded';
  }

  private _body: HTMLElement;
  private _card: IModelCard | null = null;
  private _error: NbserveApiError | null = null;
}

/**
 * Opens model cards, one tab per deployment and version (opening it again refreshes it).
 * A card that cannot be had (no such version, agent unreachable) rejects before any tab opens.
 */
export class ModelCards {
  constructor(
    readonly app: JupyterFrontEnd,
    readonly api: NbserveAPI,
    readonly sanitizer: IHtmlSanitizer
  ) {}

  async open(name: string, version: number | null): Promise<MainAreaWidget<ModelCardView>> {
    const key = `${name}\u0000${version ?? 'live'}`;
    let widget = this._open.get(key);
    if (widget && !widget.isDisposed) {
      this.app.shell.activateById(widget.id);
      await widget.content.load();
      const card = widget.content.card;
      if (card) {
        widget.title.label = `${name} v${card.version} · model card`;
      }
    } else {
      const card = await this.api.card(name, version);
      const content = new ModelCardView(this.api, name, version, this.sanitizer);
      content.render(card);
      widget = new MainAreaWidget({ content });
      widget.id = `nbserve-card-${encodeURIComponent(name)}-${version ?? 'live'}-${++ModelCards._count}`;
      widget.addClass('nbserve-CardWidget');
      widget.title.icon = nbserveIcon;
      widget.title.closable = true;
      widget.toolbar.addItem(
        'refresh',
        new ToolbarButton({ icon: refreshIcon, tooltip: 'Reload the card', onClick: () => void content.load() })
      );
      widget.toolbar.addItem(
        'copy-markdown',
        new ToolbarButton({
          icon: copyIcon,
          label: 'Copy Markdown',
          className: 'nbserve-card-copy-markdown',
          tooltip: 'Copy the card as Markdown',
          onClick: () => {
            const markdown = content.card?.markdown;
            if (markdown) {
              Clipboard.copyToSystem(markdown);
              Notification.info(`Copied the model card of ${name} as Markdown`, { autoClose: 2000 });
            }
          }
        })
      );
      this._open.set(key, widget);
      widget.disposed.connect(() => {
        if (this._open.get(key) === widget) {
          this._open.delete(key);
        }
      });
      widget.title.label = `${name} v${card.version} · model card`;
      widget.title.caption = `Model card of ${name} v${card.version}`;
      this.app.shell.add(widget, 'main', { mode: 'split-right' });
      this.app.shell.activateById(widget.id);
    }
    return widget;
  }

  private _open = new Map<string, MainAreaWidget<ModelCardView>>();
  private static _count = 0;
}
