/**
 * One deployment: quality from real outcomes, version history with provenance, aliases and
 * each version's own URL, latency and drift charts, recent events, the audit log (who changed
 * what, from where) with its hash-chain check, the log lines that matter, and the actions
 * (rollback, stop/start, open in notebook, model card).
 *
 * This view loads, keeps and reloads what the detail shows, and draws its head and actions;
 * each section below them is drawn by its own module (rolloutSection.ts, versionsSection.ts,
 * trafficSection.ts, eventsSection.ts, auditSection.ts, logsSection.ts).
 */
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import type { LogsOut, ResourceRow, SummaryOut } from './agentTypes';
import { IAudit, IDeploymentBrief, IDeploymentDetail, IMetrics, NbserveApiError, asApiError } from './api';
import { rollbackTargets } from './actions';
import { auditSection } from './auditSection';
import { button, h, rolloutBadge, statusBadge, urlLine } from './dom';
import { eventsSection } from './eventsSection';
import { metrics as summaryLine } from './listView';
import { LogLines, logsSection } from './logsSection';
import { DeploymentsModel } from './model';
import { qualityLine } from './quality';
import { ReloadingView } from './reloadingView';
import { resourceFacts } from './resources';
import { rolloutSection } from './rolloutSection';
import { trafficSection } from './trafficSection';
import { versionsSection } from './versionsSection';

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
      detail.rollout ? rolloutSection(detail, detail.rollout, this.commands) : null,
      versionsSection(detail, this.commands),
      trafficSection(this._metrics, this._metricsError, this.chartWidth()),
      eventsSection(detail.events, version => this.showLog(version)),
      auditSection(detail.name, this._audit, this._auditError),
      logsSection(detail, this._logs, version => this.pickLog(version))
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

  /** A failed version's event was clicked: load its log, then show it. */
  private showLog(version: number): void {
    this._logVersion = version;
    void this.reload().then(() => this.node.querySelector('section[data-section="logs"]')?.scrollIntoView());
  }

  /** Another version was chosen in the Logs section's select. */
  private pickLog(version: number): void {
    this._logVersion = version;
    void this.reload();
  }

  private _detail: IDeploymentDetail | null = null;
  private _metrics: IMetrics | null = null;
  private _metricsError: NbserveApiError | null = null;
  private _logs: LogLines | null = null;
  private _logVersion: number | null = null;
  private _audit: IAudit | null = null;
  private _auditError: NbserveApiError | null = null;
  private _resourcesLine: HTMLElement | null = null;
  private _resourcesFacts: HTMLElement | null = null;
  private _resourcesKey = '';
  private _renderedWidth = 0;
}
