/** The list of deployments: status, live version, stable URL, traffic, drift and quality at a glance. */
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import type { SummaryOut } from './agentTypes';
import { IDeploymentBrief } from './api';
import { fmt, sparkline } from './charts';
import { h, rolloutBadge, statusBadge, urlLine } from './dom';
import { DeploymentsModel } from './model';
import { qualityBadge } from './quality';

export class DeploymentList extends Widget {
  constructor(readonly model: DeploymentsModel) {
    super();
    this.addClass('nbserve-List');
    model.changed.connect(this.render, this);
    this.render();
  }

  /** Emitted with a deployment's name when the user opens it. */
  get selected(): ISignal<this, string> {
    return this._selected;
  }

  render(): void {
    const node = this.node;
    const { deployments, loaded, error } = this.model;
    // the resources' figures move every poll and the list shows none of them: not in the key
    const shown = deployments.map(({ resources, ...rest }) => ({ ...rest, state: resources?.state ?? null }));
    const key = JSON.stringify([loaded, error?.text ?? null, shown]);
    if (key === this._rendered && node.childElementCount > 0) {
      return; // nothing changed: keep the DOM (and keyboard focus) as it is
    }
    this._rendered = key;
    node.replaceChildren();
    if (error) {
      node.appendChild(h('div', { class: 'nbserve-error-banner', text: error.text, data: { type: error.type } }));
    }
    if (!loaded) {
      node.appendChild(h('div', { class: 'nbserve-empty', text: error ? '' : 'Loading deployments…' }));
      return;
    }
    if (deployments.length === 0) {
      node.appendChild(
        h(
          'div',
          { class: 'nbserve-empty' },
          h('p', { text: 'No deployments yet.' }),
          h('p', { text: 'In a notebook:' }),
          h('pre', { text: '%load_ext nbserve\n%deploy model --name NAME --sample X' })
        )
      );
      return;
    }
    const list = h('ul', { class: 'nbserve-rows' });
    for (const dep of deployments) {
      list.appendChild(this.row(dep));
    }
    node.appendChild(list);
  }

  private row(dep: IDeploymentBrief): HTMLElement {
    const li = h(
      'li',
      {
        class: `nbserve-row${dep.rollout ? ` nbserve-row-${dep.rollout.mode}` : ''}`,
        data: { name: dep.name, status: dep.status, version: String(dep.version ?? ''), rollout: dep.rollout ? dep.rollout.mode : '' }
      },
      h(
        'div',
        { class: 'nbserve-row-head' },
        h('span', { class: 'nbserve-name', text: dep.name }),
        h('span', { class: 'nbserve-version-tag', text: dep.version === null ? 'no live version' : `v${dep.version}`, title: 'live version' }),
        rolloutBadge(dep),
        statusBadge(dep.status)
      ),
      urlLine(dep.url),
      metrics(dep.summary)
    );
    li.tabIndex = 0;
    li.title = `Open ${dep.name}`;
    li.addEventListener('click', () => this._selected.emit(dep.name));
    li.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        this._selected.emit(dep.name);
      }
    });
    return li;
  }

  private _selected = new Signal<this, string>(this);
  private _rendered = '';
}

/**
 * p50/p99, request rate with its sparkline, error rate, the drift flag and (unless the
 * caller shows it at length) the live version's quality from real outcomes.
 */
export function metrics(summary: SummaryOut | null, withQuality = true): HTMLElement {
  if (!summary) {
    return h('div', { class: 'nbserve-metrics nbserve-muted', text: 'no metrics' });
  }
  const drift = summary.drift;
  let flag: HTMLElement;
  if (!drift || drift.drifted === null || drift.drifted === undefined) {
    flag = h('span', { class: 'nbserve-drift nbserve-drift-unknown', text: 'drift –', title: 'not enough traffic to test drift' });
  } else if (drift.drifted) {
    flag = h('span', {
      class: 'nbserve-drift nbserve-drift-yes',
      text: 'drift',
      title: `drift in ${fmt((drift.share ?? 0) * 100)}% of ${drift.features} features`
    });
  } else {
    flag = h('span', { class: 'nbserve-drift nbserve-drift-no', text: 'no drift', title: `${drift.features} features tested` });
  }
  return h(
    'div',
    { class: 'nbserve-metrics' },
    h('span', { class: 'nbserve-metric', title: 'median and 99th percentile latency' }, `p50 ${fmt(summary.p50_ms)} · p99 ${fmt(summary.p99_ms)} ms`),
    h('span', { class: 'nbserve-metric', title: 'requests per second' }, `${fmt(summary.rps)} req/s`),
    sparkline(summary.sparkline ?? []),
    summary.error_rate ? h('span', { class: 'nbserve-metric nbserve-errors', text: `${fmt(summary.error_rate * 100)}% err` }) : null,
    flag,
    withQuality ? qualityBadge(summary.quality) : null
  );
}
