/**
 * One deployment: quality from real outcomes, version history with provenance, aliases and
 * each version's own URL, latency and drift charts, recent events, the audit log (who changed
 * what, from where) with its hash-chain check, the log lines that matter, and the actions
 * (rollback, stop/start, open in notebook, model card).
 */
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import type { AuditOut, EventOut, LogsOut, ResourceRow, SummaryOut } from './agentTypes';
import {
  IAudit,
  IAuditChain,
  IDeploymentBrief,
  IDeploymentDetail,
  IDriftFeature,
  IHistoryRow,
  IMetrics,
  IRollout,
  NbserveApiError,
  asApiError
} from './api';
import { CANARY_PRESETS, rollbackTargets } from './actions';
import { barChart, fmt, lineChart } from './charts';
import { ago, button, copyButton, fmtPercent, h, rolloutBadge, rolloutLabel, statusBadge, urlLine } from './dom';
import { metrics as summaryLine } from './listView';
import { DeploymentsModel } from './model';
import { qualityLine } from './quality';
import { ReloadingView } from './reloadingView';
import { resourceFacts } from './resources';

const ERROR_LINES = /error|exception|traceback|failed|critical/i;
/** Audit actions shown as warnings: the agent or a user took traffic away from a version. */
const WARN_ACTIONS = /^(gate_breached|rollback|aborted)$/;
/** How many audit records the detail shows (newest first). */
const AUDIT_ROWS = 30;
/** Reload history, events, audit, metrics and logs at least this often while open (ms). */
const RELOAD_EVERY = 10000;
/** ... and this often while a canary or shadow is under way: its figures move (ms). */
const RELOAD_ROLLOUT_EVERY = 4000;

/** What one reload of the detail brings, each request settled on its own. */
type DetailLoad = [
  PromiseSettledResult<IDeploymentDetail>,
  PromiseSettledResult<IMetrics>,
  PromiseSettledResult<LogsOut>,
  PromiseSettledResult<IAudit>
];

export class DeploymentDetail extends ReloadingView<IDeploymentBrief, DetailLoad> {
  constructor(
    model: DeploymentsModel,
    readonly commands: CommandRegistry
  ) {
    super(model);
  }

  protected brief(name: string): IDeploymentBrief | undefined {
    return this.model.find(name);
  }

  /** What, in the compact list, means the detail is out of date. */
  protected stamp(brief: IDeploymentBrief | undefined): string {
    if (!brief) {
      return '';
    }
    return JSON.stringify([brief.status, brief.version, brief.versions, brief.rollout, brief.aliases ?? null]);
  }

  protected maxAge(brief: IDeploymentBrief | undefined): number {
    return brief?.rollout ? RELOAD_ROLLOUT_EVERY : RELOAD_EVERY;
  }

  protected onPoll(brief: IDeploymentBrief | undefined): void {
    this.updateResources(brief?.resources);
  }

  protected forget(): void {
    this._detail = null;
    this._metrics = null;
    this._logs = null;
    this._logVersion = null;
    this._audit = null;
    this._auditError = null;
  }

  protected fetch(name: string): Promise<DetailLoad> {
    const api = this.model.api;
    return Promise.allSettled([
      api.detail(name),
      api.metrics(name, '1h'),
      api.logs(name, this._logVersion, 200),
      api.audit(name, AUDIT_ROWS)
    ]);
  }

  protected async keep([detail, metrics, logs, audit]: DetailLoad): Promise<void> {
    if (detail.status === 'fulfilled') {
      this._detail = detail.value;
      this.loadError = null;
      const newest = [...detail.value.history].sort((a, b) => b.version - a.version)[0];
      if (this._logVersion === null && newest?.status === 'failed') {
        // the newest version failed: its log is the one that explains why
        this._logVersion = newest.version;
        this.render();
        await this.reload();
        return;
      }
    } else {
      this.loadError = asApiError(detail.reason);
    }
    this._metrics = metrics.status === 'fulfilled' ? metrics.value : null;
    this._metricsError = metrics.status === 'rejected' ? asApiError(metrics.reason) : null;
    this._logs = logs.status === 'fulfilled' ? logs.value : { version: this._logVersion, text: `(${asApiError(logs.reason).text})` };
    this._audit = audit.status === 'fulfilled' ? audit.value : null;
    this._auditError = audit.status === 'rejected' ? asApiError(audit.reason) : null;
    this.render();
  }

  protected body(name: string): (HTMLElement | null)[] {
    const detail = this._detail;
    if (!detail) {
      return [];
    }
    const brief = this.model.find(name);
    return [
      this.header(detail, brief),
      this.actions(detail),
      detail.rollout ? this.rollout(detail, detail.rollout) : null,
      this.history(detail),
      this.charts(),
      this.events(detail.events),
      this.audit(detail.name),
      this.logs(detail)
    ];
  }

  /** The node says which deployment, live version and rollout it shows. */
  protected onRendered(): void {
    const detail = this._detail;
    this.node.dataset.version = String(detail?.version ?? '');
    this.node.dataset.rollout = detail?.rollout ? `${detail.rollout.mode}:${detail.rollout.version}` : '';
    this._renderedWidth = this.node.clientWidth;
  }

  private header(detail: IDeploymentDetail, brief: IDeploymentBrief | undefined): HTMLElement {
    // the list's poll is the freshest (every 2 s); the detail's own answer until it has one
    const summary: SummaryOut | null = brief?.summary ?? detail.summary ?? null;
    return h(
      'div',
      { class: 'nbserve-detail-head' },
      h(
        'div',
        { class: 'nbserve-row-head' },
        h('span', { class: 'nbserve-name nbserve-title', text: detail.name }),
        h('span', { class: 'nbserve-version-tag nbserve-live-version', text: detail.version === null ? 'no live version' : `v${detail.version} live` }),
        detail.rollout ? rolloutBadge(detail) : null,
        statusBadge(detail.status)
      ),
      urlLine(detail.url),
      summary ? summaryLine(summary, false) : null,
      summary ? qualityLine(summary.quality) : null,
      this.resources(detail, brief)
    );
  }

  /**
   * "Resources": warm or cold, workers × servers, CPU, RSS, caps and their enforcement, idle
   * time, and Scale…. The poll's row (every 2 s) is the freshest; the detail's own until then.
   */
  private resources(detail: IDeploymentDetail, brief: IDeploymentBrief | undefined): HTMLElement {
    const r = brief?.resources ?? detail.resources ?? null;
    const facts = resourceFacts(r);
    const line = h(
      'div',
      { class: 'nbserve-resources', data: { state: r?.state ?? '', workers: r ? String(r.workers) : '' } },
      h('span', { class: 'nbserve-res-label', text: 'Resources' }),
      facts,
      button(
        'Scale…',
        () => void this.commands.execute('nbserve:scale', { name: detail.name }),
        'nbserve-scale',
        'Change workers, memory and CPU caps, batching, or the idle timeout'
      )
    );
    this._resourcesLine = line;
    this._resourcesFacts = facts;
    this._resourcesKey = JSON.stringify(r);
    return line;
  }

  /** Every poll moves CPU and idle time: swap the facts in place (the Scale… button keeps focus). */
  private updateResources(r: ResourceRow | null | undefined): void {
    const line = this._resourcesLine;
    const old = this._resourcesFacts;
    if (!r || !line || !old || !line.isConnected) {
      return; // none from the poll: keep the detail's own
    }
    const key = JSON.stringify(r);
    if (key === this._resourcesKey) {
      return;
    }
    const facts = resourceFacts(r);
    old.replaceWith(facts);
    this._resourcesFacts = facts;
    this._resourcesKey = key;
    line.dataset.state = r.state;
    line.dataset.workers = String(r.workers);
  }

  private actions(detail: IDeploymentDetail): HTMLElement {
    const name = detail.name;
    const bar = h('div', { class: 'nbserve-actions' });
    const targets = rollbackTargets(detail);
    const previous = targets.find(n => detail.version === null || n < detail.version);
    if (previous !== undefined) {
      bar.appendChild(
        button(`Roll back to v${previous}`, () => void this.commands.execute('nbserve:rollback', { name, to: previous }), 'nbserve-rollback-previous')
      );
    }
    if (detail.status === 'stopped') {
      bar.appendChild(button('Start', () => void this.commands.execute('nbserve:start', { name }), 'nbserve-start'));
    } else {
      bar.appendChild(button('Stop', () => void this.commands.execute('nbserve:stop', { name }), 'nbserve-stop'));
    }
    bar.appendChild(
      button('Open in notebook', () => void this.commands.execute('nbserve:open-in-notebook', { name }), 'nbserve-open', 'Insert a %deploy cell into the current notebook')
    );
    const cardVersion = detail.version ?? Math.max(0, ...detail.history.map(row => row.version));
    if (cardVersion > 0) {
      bar.appendChild(
        button(
          'Model card',
          () => void this.commands.execute('nbserve:open-model-card', { name, version: cardVersion }),
          'nbserve-model-card',
          `What v${cardVersion} is, where it came from, its input schema and how it has done so far`
        )
      );
    }
    return bar;
  }

  /** The canary or shadow under way: share, age, gates against the figures so far, verdict, actions. */
  private rollout(detail: IDeploymentDetail, r: IRollout): HTMLElement {
    const name = detail.name;
    const f = r.figures ?? {};
    const gates = r.gates ?? {};
    const age = f.age_seconds ?? (r.started_at ? Date.now() / 1000 - r.started_at : null);
    const verdictText =
      r.verdict === 'breach'
        ? 'breach: rolling back'
        : r.verdict === 'pass'
          ? r.auto_promote
            ? 'gates passed: promoting'
            : 'gates passed for the window'
          : `waiting${(f.requests ?? 0) < Number(gates.min_requests ?? 0) ? ` for ${gates.min_requests} requests` : ''}`;
    const head = h(
      'div',
      { class: 'nbserve-rollout-head' },
      h('span', { class: `nbserve-rollout-badge nbserve-rollout-${r.mode}`, text: rolloutLabel(detail) }),
      h('span', { class: 'nbserve-muted', text: `${r.mode === 'canary' ? `${fmtPercent(r.percent)} of new requests` : 'mirrored live traffic'} · for ${duration(age)}` }),
      h('span', { class: `nbserve-verdict nbserve-verdict-${r.verdict}`, text: verdictText, data: { verdict: r.verdict } })
    );
    const meta = h('div', {
      class: 'nbserve-muted nbserve-rollout-meta',
      text: [
        r.auto_promote ? `auto-promote after ${gates.window ?? '–'} of passing gates` : 'promoted by hand',
        r.sticky_header ? `sticky on ${r.sticky_header}` : '',
        r.started_by ? `started by ${r.started_by}` : ''
      ]
        .filter(Boolean)
        .join(' · ')
    });

    // Gates: limit and the figure it is judged on.
    const shadow = f.shadow ?? null;
    const p99 = r.mode === 'shadow' ? shadow?.p99_ms ?? f.p99_ms : f.p99_ms;
    const errorRate = r.mode === 'shadow' ? shadow?.error_rate ?? f.error_rate : f.error_rate;
    const rows: [string, string, string, boolean | null][] = [];
    const judge = (limit: unknown, value: number | null | undefined): boolean | null =>
      typeof limit === 'number' && typeof value === 'number' ? value > limit : null;
    if (gates.p99_ms !== undefined && gates.p99_ms !== null) {
      rows.push(['p99', `≤ ${fmt(Number(gates.p99_ms))} ms`, p99 === null || p99 === undefined ? '–' : `${fmt(p99)} ms`, judge(gates.p99_ms, p99)]);
    }
    if (gates.error_rate !== undefined && gates.error_rate !== null) {
      rows.push(['error rate', `≤ ${fmtShare(Number(gates.error_rate))}`, fmtShare(errorRate), judge(gates.error_rate, errorRate)]);
    }
    if (gates.drift_share !== undefined && gates.drift_share !== null) {
      rows.push(['drift share', `≤ ${fmtShare(Number(gates.drift_share))}`, fmtShare(f.drift_share), judge(gates.drift_share, f.drift_share)]);
    }
    rows.push(['requests', `≥ ${gates.min_requests ?? '–'} to judge`, String(f.requests ?? 0), null]);
    rows.push(['window', String(gates.window ?? '–'), duration(age), null]);
    const table = h('table', { class: 'nbserve-gates' });
    table.appendChild(h('thead', {}, h('tr', {}, h('th', { text: 'gate' }), h('th', { text: 'limit' }), h('th', { text: 'so far' }))));
    const body = h('tbody');
    for (const [gate, limit, value, breached] of rows) {
      body.appendChild(
        h(
          'tr',
          { class: breached ? 'nbserve-gate-breached' : breached === false ? 'nbserve-gate-ok' : '', data: { gate } },
          h('td', { text: gate }),
          h('td', { text: limit }),
          h('td', { text: value + (breached ? ' ✗' : breached === false ? ' ✓' : '') })
        )
      );
    }
    table.appendChild(body);

    const figures = h(
      'div',
      { class: 'nbserve-metrics nbserve-rollout-figures' },
      h('span', { class: 'nbserve-metric', title: `v${r.version}'s median and 99th percentile latency since the rollout started` }, `p50 ${fmt(f.p50_ms ?? null)} · p99 ${fmt(f.p99_ms ?? null)} ms`),
      h('span', { class: 'nbserve-metric', text: `${f.requests ?? 0} requests` }),
      h('span', { class: 'nbserve-metric', text: `${fmtShare(f.error_rate)} errors` })
    );
    const parts: (HTMLElement | null)[] = [head, meta, table, figures];
    if (shadow) {
      parts.push(
        h(
          'div',
          { class: 'nbserve-metrics nbserve-shadow-figures' },
          h('span', { class: 'nbserve-metric', text: `${shadow.compared} compared` }),
          h('span', { class: `nbserve-metric${shadow.differing ? ' nbserve-errors' : ''}`, text: `${shadow.differing} differ (${fmtShare(shadow.difference_rate)})` }),
          h('span', { class: `nbserve-metric${shadow.errors ? ' nbserve-errors' : ''}`, text: `${shadow.errors} shadow errors` }),
          shadow.last_error ? h('span', { class: 'nbserve-metric nbserve-errors', text: shadow.last_error, title: 'last shadow error' }) : null
        )
      );
    }
    if (r.reasons && r.reasons.length > 0) {
      parts.push(h('ul', { class: 'nbserve-rollout-reasons' }, ...r.reasons.map(reason => h('li', { text: reason }))));
    }

    const bar = h(
      'div',
      { class: 'nbserve-rollout-actions' },
      button('Promote', () => void this.commands.execute('nbserve:promote', { name }), 'nbserve-promote', `Make v${r.version} live`),
      button('Abort', () => void this.commands.execute('nbserve:abort-rollout', { name }), 'nbserve-abort', `Take v${r.version} out of the traffic; v${detail.version ?? '–'} keeps serving`)
    );
    parts.push(bar);
    if (r.mode === 'canary') {
      const shares = h('div', { class: 'nbserve-canary-shares' }, h('span', { class: 'nbserve-muted', text: 'share:' }));
      for (const preset of CANARY_PRESETS) {
        const b = button(`${preset}%`, () => void this.commands.execute('nbserve:set-canary', { name, percent: preset }), 'nbserve-canary-preset', `Send ${preset}% of new requests to v${r.version}`);
        b.dataset.percent = String(preset);
        if (r.percent !== null && Math.abs(r.percent - preset) < 1e-9) {
          b.classList.add('nbserve-current');
          b.disabled = true;
        }
        shares.appendChild(b);
      }
      shares.appendChild(button('Other…', () => void this.commands.execute('nbserve:set-canary', { name }), 'nbserve-canary-other', 'Type a share'));
      parts.push(shares);
    }
    const box = section('Rollout', ...parts.filter((p): p is HTMLElement => p !== null));
    box.classList.add(`nbserve-rollout-section`, `nbserve-rollout-${r.mode}-section`);
    box.dataset.mode = r.mode;
    box.dataset.verdict = r.verdict;
    return box;
  }

  private history(detail: IDeploymentDetail): HTMLElement {
    const targets = new Set(rollbackTargets(detail));
    const list = h('div', { class: 'nbserve-history' });
    for (const row of [...detail.history].sort((a, b) => b.version - a.version)) {
      list.appendChild(this.versionRow(detail, row, targets.has(row.version)));
    }
    return section('Versions', aliasChips(detail), list);
  }

  /**
   * One version: number (its own URL copyable), status, when and who, its model card;
   * notebook and cell; its error if it failed.
   */
  private versionRow(detail: IDeploymentDetail, row: IHistoryRow, canRollBack: boolean): HTMLElement {
    const name = detail.name;
    const cellNo = row.cell !== null && row.cell !== undefined ? ` · cell [${row.cell}]` : '';
    const where = row.notebook ? `${basename(row.notebook)}${cellNo}` : 'not from a notebook';
    const provenance = [
      row.notebook,
      row.cell_sha256 ? `cell sha256 ${row.cell_sha256}…` : '',
      row.model ?? '',
      row.bento ?? ''
    ]
      .filter(Boolean)
      .join('\n');
    const action = canRollBack
      ? button(
          'Roll back',
          () => void this.commands.execute('nbserve:rollback', { name, to: row.version }),
          'nbserve-rollback',
          `Point the stable URL at v${row.version}`
        )
      : null;
    const card = button(
      'Card',
      () => void this.commands.execute('nbserve:open-model-card', { name, version: row.version }),
      'nbserve-card-version',
      `Model card of v${row.version}`
    );
    const ownUrl = detail.url ? `${detail.url}/v/${row.version}` : null;
    return h(
      'div',
      {
        class: `nbserve-version-row${row.live ? ' nbserve-live' : ''}${row.status === 'canary' || row.status === 'shadow' ? ` nbserve-rollout-row nbserve-${row.status}-row` : ''}`,
        data: { version: String(row.version), status: row.status }
      },
      h(
        'div',
        { class: 'nbserve-version-line' },
        h('span', { class: 'nbserve-version-number', text: `v${row.version}` }),
        ownUrl ? copyButton(ownUrl, 'nbserve-copy-version', `Copy v${row.version}'s own URL: ${ownUrl}`) : null,
        h('span', { class: `nbserve-vstatus nbserve-vstatus-${row.status}`, text: row.status }),
        h('span', { class: 'nbserve-muted' }, ago(row.created_at), ` · ${row.created_by ?? '–'}`),
        h('span', { class: 'nbserve-version-buttons' }, card, action)
      ),
      h(
        'div',
        { class: 'nbserve-version-meta', title: provenance },
        where,
        row.description ? h('span', { class: 'nbserve-description', text: ` — ${row.description}` }) : null
      ),
      row.error ? h('pre', { class: 'nbserve-version-error', text: row.error }) : null
    );
  }

  private charts(): HTMLElement {
    const m = this._metrics;
    if (!m) {
      const why = this._metricsError ? this._metricsError.text : 'loading…';
      return section('Traffic and drift', h('div', { class: 'nbserve-muted', text: why }));
    }
    const times = m.latency.map(p => new Date(p.time * 1000).toISOString());
    const chart = h('div', { class: 'nbserve-chart-box' });
    const width = this.chartWidth();
    chart.appendChild(lineChart(`latency (last ${m.window})`, times, [
      { label: 'p50', values: m.latency.map(p => p.p50_ms) },
      { label: 'p99', values: m.latency.map(p => p.p99_ms) }
    ], ' ms', width));
    chart.appendChild(lineChart('requests/s and errors', times, [
      { label: 'req/s', values: m.latency.map(p => p.rps) },
      { label: 'err/min', values: m.latency.map(p => p.errors) }
    ], '', width));
    const parts: HTMLElement[] = [chart];
    if (m.drift.features.length === 0) {
      const why = m.drift.unavailable?.message ?? 'not enough traffic yet';
      parts.push(h('div', { class: 'nbserve-muted nbserve-drift-unavailable', text: `drift: ${why}` }));
    } else {
      const d = m.drift;
      const verdict = d.dataset_drift === null ? 'drift: –' : d.dataset_drift ? `drift detected (${fmt((d.drift_share ?? 0) * 100)}% of features)` : 'no dataset drift';
      parts.push(
        h('div', { class: `nbserve-drift-verdict${d.dataset_drift ? ' nbserve-drift-yes' : ''}`, text: verdict }),
        h(
          'div',
          { class: 'nbserve-chart-box' },
          barChart(
            'drift per feature (line: threshold)',
            d.features.map(f => ({
              label: f.feature,
              severity: severity(f),
              flagged: f.drifted,
              note: `${f.method} ${fmt(f.score)}`
            })),
            this.chartWidth()
          )
        )
      );
    }
    return section('Traffic and drift', ...parts);
  }

  /** Charts fill the panel's width (the sidebar is narrow and resizable). */
  private chartWidth(): number {
    return Math.max(200, Math.min(600, this.node.clientWidth - 28));
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    const width = this.node.clientWidth;
    if (this._detail && Math.abs(width - this._renderedWidth) > 16) {
      this.render();
    }
  }

  private events(events: EventOut[]): HTMLElement {
    if (events.length === 0) {
      return section('Recent events', h('div', { class: 'nbserve-muted', text: 'none' }));
    }
    const recent = [...events].sort((a, b) => (b.ts < a.ts ? -1 : b.ts > a.ts ? 1 : 0)).slice(0, 20);
    const list = h('ul', { class: 'nbserve-events' });
    for (const event of recent) {
      // The agent says how serious each event is (nbserve/_events.py): one spelling, not a copy here.
      const bad = event.severity === 'error';
      const warn = event.severity === 'warning';
      const version = event.version;
      const item = list.appendChild(
        h(
          'li',
          { class: `nbserve-event${bad ? ' nbserve-event-error' : warn ? ' nbserve-event-warn' : ''}`, data: { kind: event.kind } },
          ago(event.ts),
          h('span', { class: 'nbserve-event-kind', text: event.kind }),
          event.version !== null && event.version !== undefined ? h('span', { class: 'nbserve-version-tag', text: `v${event.version}` }) : null,
          h('span', { class: 'nbserve-event-message', text: event.message ?? '', title: event.actor ? `by ${event.actor}` : '' })
        )
      );
      if (bad && version !== null && version !== undefined) {
        item.classList.add('nbserve-clickable');
        item.title = `Show the log of v${version}`;
        item.addEventListener('click', () => {
          this._logVersion = version;
          void this.reload().then(() => this.node.querySelector('section[data-section="logs"]')?.scrollIntoView());
        });
      }
    }
    return section('Recent events', list);
  }

  /** Who changed what, when, from where (newest first), and whether the hash chain holds. */
  private audit(name: string): HTMLElement {
    const audit = this._audit;
    if (!audit) {
      const why = this._auditError ? this._auditError.text : 'loading…';
      return section('Audit', h('div', { class: 'nbserve-muted', text: why }));
    }
    const chain = chainLine(audit.chain);
    if (audit.records.length === 0) {
      return section('Audit', chain, h('div', { class: 'nbserve-muted', text: 'no audit records for this deployment' }));
    }
    const table = h('table', { class: 'nbserve-audit' });
    table.setAttribute('aria-label', `Audit log of ${name}, newest first`);
    const head = h('tr');
    for (const title of ['when', 'who / from', 'action', 'live']) {
      const th = head.appendChild(h('th', { text: title }));
      th.scope = 'col';
    }
    table.appendChild(h('thead', {}, head));
    const body = h('tbody');
    for (const record of [...audit.records].sort((a, b) => b.seq - a.seq)) {
      body.appendChild(auditRow(record, audit.chain.broken_at));
    }
    table.appendChild(body);
    const box = section('Audit', chain, h('div', { class: 'nbserve-audit-scroll' }, table));
    box.dataset.records = String(audit.records.length);
    return box;
  }

  private logs(detail: IDeploymentDetail): HTMLElement {
    const select = h('select', { class: 'nbserve-log-version jp-mod-styled', title: 'which version’s server log' });
    const shown = this._logs?.version ?? detail.version;
    for (const row of [...detail.history].sort((a, b) => b.version - a.version)) {
      const option = h('option', { text: `v${row.version} (${row.status})` });
      option.value = String(row.version);
      option.selected = row.version === shown;
      select.appendChild(option);
    }
    select.addEventListener('change', () => {
      this._logVersion = Number(select.value);
      void this.reload();
    });
    const pre = h('pre', { class: 'nbserve-log' });
    const lines = (this._logs?.text ?? '').split('\n');
    const errors = lines.filter(l => ERROR_LINES.test(l)).length;
    for (const line of lines) {
      pre.appendChild(h('span', { class: ERROR_LINES.test(line) ? 'nbserve-log-line nbserve-log-error' : 'nbserve-log-line', text: line + '\n' }));
    }
    const head = h('div', { class: 'nbserve-log-head' }, select, h('span', { class: 'nbserve-muted', text: errors ? `${errors} error line${errors > 1 ? 's' : ''} highlighted` : '' }));
    const box = section('Logs', head, pre);
    requestAnimationFrame(() => (pre.scrollTop = pre.scrollHeight));
    return box;
  }

  private _detail: IDeploymentDetail | null = null;
  private _metrics: IMetrics | null = null;
  private _metricsError: NbserveApiError | null = null;
  private _logs: Pick<LogsOut, 'text'> & { version: number | null } | null = null;
  private _logVersion: number | null = null;
  private _audit: IAudit | null = null;
  private _auditError: NbserveApiError | null = null;
  private _resourcesLine: HTMLElement | null = null;
  private _resourcesFacts: HTMLElement | null = null;
  private _resourcesKey = '';
  private _renderedWidth = 0;
}

/** The named versions above the version list: "staging → v1", each copying its URL. */
function aliasChips(detail: IDeploymentDetail): HTMLElement | null {
  const aliases = Object.entries(detail.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (aliases.length === 0) {
    return null;
  }
  const line = h('div', { class: 'nbserve-aliases' }, h('span', { class: 'nbserve-muted', text: 'aliases:' }));
  for (const [alias, version] of aliases) {
    const url = detail.url ? `${detail.url}/v/${encodeURIComponent(alias)}` : null;
    const chip = h('span', {
      class: 'nbserve-alias-chip',
      text: `${alias} → v${version}`,
      title: url ? `${url}/... calls v${version}` : `calls v${version}`,
      data: { alias, version: String(version) }
    });
    line.appendChild(chip);
    if (url) {
      chip.appendChild(copyButton(url, 'nbserve-copy-alias', `Copy ${url}`));
    }
  }
  return line;
}

function fmtShare(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '–';
  }
  return `${fmt(value * 100)}%`;
}

function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '–';
  }
  if (seconds < 90) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${fmt(seconds / 3600)} h`;
}

/** P-values drift below their threshold, distances above theirs: 1 is the threshold either way. */
const PVALUE_METHODS = ['ks', 'chisquare', 'z'];

function severity(f: IDriftFeature): number | null {
  if (f.score === null || f.threshold === null || !isFinite(f.score) || !isFinite(f.threshold)) {
    return null;
  }
  if (PVALUE_METHODS.includes(f.method)) {
    return f.threshold / Math.max(f.score, 1e-300);
  }
  return f.score / Math.max(f.threshold, 1e-300);
}

/** "hash chain intact · N records", or a warning naming the first broken record. */
function chainLine(chain: IAuditChain): HTMLElement {
  if (chain.ok === true) {
    const line = h('div', {
      class: 'nbserve-audit-chain nbserve-audit-chain-ok',
      text: `hash chain intact · ${chain.records ?? 0} record${chain.records === 1 ? '' : 's'}`,
      title: `The agent recomputed its whole audit log's hash chain; head ${chain.head ?? '–'}`,
      data: { ok: 'true' }
    });
    return line;
  }
  if (chain.ok === false) {
    const line = h('div', {
      class: 'nbserve-audit-chain nbserve-audit-chain-broken',
      text: `audit log broken at record ${chain.broken_at ?? '?'}`,
      title: chain.problem ?? '',
      data: { ok: 'false' }
    });
    line.setAttribute('role', 'alert');
    return line;
  }
  const why = chain.unavailable ? chain.unavailable.message : 'not checked';
  return h('div', { class: 'nbserve-audit-chain nbserve-muted', text: `hash chain not checked: ${why}`, data: { ok: '' } });
}

/**
 * One audit record: when, who (the agent's own actions muted) and from where, action, live
 * change. The source sits under the actor: five columns do not fit the sidebar's width.
 */
function auditRow(r: AuditOut, brokenAt: number | null): HTMLElement {
  const byAgent = r.token === null || r.token === undefined;
  const who = h(
    'td',
    {
      class: byAgent ? 'nbserve-audit-who nbserve-audit-agent' : 'nbserve-audit-who',
      title: byAgent ? 'the agent itself (no token)' : r.token === r.actor ? `token ${r.token}` : `${r.actor}, with the ${r.token} token`
    },
    h('span', { class: 'nbserve-audit-actor', text: r.actor }),
    r.source ? h('span', { class: 'nbserve-audit-source', text: r.source, title: `from ${r.source}` }) : null
  );
  const message = typeof r.detail?.message === 'string' ? r.detail.message : '';
  const action = h('td', {
    class: `nbserve-audit-action${WARN_ACTIONS.test(r.action) ? ' nbserve-audit-warn' : ''}`,
    title: [message, r.version !== null && r.version !== undefined ? `v${r.version}` : '', `record ${r.seq}`].filter(Boolean).join(' · ')
  });
  // "version_registered" may break after its underscores, nowhere else
  r.action.split('_').forEach((part, i, parts) => {
    action.append(part, ...(i < parts.length - 1 ? ['_', h('wbr')] : []));
  });
  const moved = r.before !== r.after && (r.before !== null || r.after !== null);
  const live = h('td', {
    class: 'nbserve-audit-live',
    text: moved ? `${liveName(r.before)} → ${liveName(r.after)}` : '',
    title: moved ? 'live version before → after (–: none)' : 'the live version did not change'
  });
  const row = h(
    'tr',
    { class: 'nbserve-audit-row', data: { seq: String(r.seq), action: r.action } },
    h('td', { class: 'nbserve-audit-when' }, ago(r.ts)),
    who,
    action,
    live
  );
  if (brokenAt !== null && r.seq === brokenAt) {
    row.classList.add('nbserve-audit-broken'); // the chain check's first bad record
  }
  return row;
}

function liveName(version: number | null | undefined): string {
  return version === null || version === undefined ? '–' : `v${version}`;
}

function section(title: string, ...children: (HTMLElement | null)[]): HTMLElement {
  return h('section', { class: 'nbserve-section', data: { section: title.toLowerCase() } }, h('h3', { text: title }), ...children);
}

function basename(path: string): string {
  return path.split('/').pop() ?? path;
}
