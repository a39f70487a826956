/** Tiny DOM helpers shared by the widgets, and the words of the badges they draw. */
import { Clipboard } from '@jupyterlab/apputils';
import { Notification } from '@jupyterlab/apputils';
import { copyIcon } from '@jupyterlab/ui-components';

import type { IDeploymentState } from './api';

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { class?: string; text?: string; title?: string; data?: Record<string, string> } = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) {
    el.className = props.class;
  }
  if (props.text !== undefined) {
    el.textContent = props.text;
  }
  if (props.title) {
    el.title = props.title;
  }
  for (const [key, value] of Object.entries(props.data ?? {})) {
    el.dataset[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

/** A titled part of a view; `data-section` is its title in lower case (scrolling and tests find it by that). */
export function section(title: string, ...children: (HTMLElement | null)[]): HTMLElement {
  return h('section', { class: 'nbserve-section', data: { section: title.toLowerCase() } }, h('h3', { text: title }), ...children);
}

export function button(label: string, onClick: () => void, cls = '', title = ''): HTMLButtonElement {
  const el = h('button', { class: `nbserve-button ${cls}`.trim(), text: label, title });
  el.type = 'button';
  el.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return el;
}

/** The tooltip of a cold deployment, wherever its state shows. */
export const COLD_TOOLTIP = 'scaled to zero: the next request starts it';

/**
 * Status as a coloured dot and a word: serving, starting, restarting, failed, stopped; a
 * deployment scaled to zero as a muted "cold" pill (it is fine: the next request starts it).
 */
export function statusBadge(status: string): HTMLElement {
  if (status === 'cold') {
    return h('span', { class: 'nbserve-status nbserve-status-cold nbserve-pill', text: 'cold', title: COLD_TOOLTIP, data: { status } });
  }
  return h('span', { class: `nbserve-status nbserve-status-${status}`, data: { status } }, h('span', { class: 'nbserve-dot' }), status);
}

/** An icon button that copies `text` (a URL) to the clipboard and says so. */
export function copyButton(text: string, cls = 'nbserve-copy', title = `Copy ${text}`): HTMLButtonElement {
  const copy = h('button', { class: `nbserve-icon-button ${cls}`, title, data: { copy: text } });
  copy.type = 'button';
  copy.setAttribute('aria-label', title);
  copyIcon.element({ container: copy, height: '14px', width: '14px' });
  copy.addEventListener('click', event => {
    event.stopPropagation();
    Clipboard.copyToSystem(text);
    Notification.info(`Copied ${text}`, { autoClose: 2000 });
  });
  return copy;
}

/** The stable URL with a copy button. */
export function urlLine(url: string | null): HTMLElement {
  if (!url) {
    return h('span', { class: 'nbserve-url nbserve-muted', text: 'no URL yet' });
  }
  return h('span', { class: 'nbserve-url' }, h('code', { text: url, title: url }), copyButton(url));
}

/** "3 min ago" for an ISO time, with the full time as a tooltip. */
export function ago(iso: string | null | undefined): HTMLElement {
  if (!iso) {
    return h('span', { text: '–' });
  }
  const date = new Date(iso);
  const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
  let text: string;
  if (isNaN(seconds)) {
    text = iso;
  } else if (seconds < 60) {
    text = 'just now';
  } else if (seconds < 3600) {
    text = `${Math.floor(seconds / 60)} min ago`;
  } else if (seconds < 86400) {
    text = `${Math.floor(seconds / 3600)} h ago`;
  } else {
    text = date.toLocaleDateString();
  }
  return h('time', { text, title: date.toLocaleString() });
}

/** "canary v3 · 10%" or "shadow v3": a rollout in a few characters. */
export function rolloutLabel(dep: IDeploymentState): string {
  const r = dep.rollout;
  if (!r) {
    return '';
  }
  return r.mode === 'canary' ? `canary v${r.version} · ${fmtPercent(r.percent)}` : `shadow v${r.version}`;
}

export function fmtPercent(value: number | null | undefined): string {
  if (value === null || value === undefined) {
    return '–';
  }
  return `${Number(value.toFixed(2))}%`;
}

/** The list's and the detail's rollout badge: "canary v3 · 10%", in the rollout colour. */
export function rolloutBadge(dep: IDeploymentState): HTMLElement | null {
  const r = dep.rollout;
  if (!r) {
    return null;
  }
  return h('span', {
    class: `nbserve-rollout-badge nbserve-rollout-${r.mode}`,
    text: rolloutLabel(dep),
    title: r.mode === 'canary' ? `v${r.version} gets ${fmtPercent(r.percent)} of new requests` : `v${r.version} gets a copy of live traffic; its answers are compared, never returned`,
    data: { mode: r.mode, version: String(r.version) }
  });
}

