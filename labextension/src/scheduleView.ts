/**
 * Scheduled retraining in the panel: the list of schedules (under the deployments) and one
 * schedule's detail with its runs and their executed notebooks.
 */
import { CommandRegistry } from '@lumino/commands';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { ISchedule, IScheduleDetail, IScheduleRun, asApiError } from './api';
import { fmt } from './charts';
import { ago, button, h } from './dom';
import { DeploymentsModel } from './model';
import { ReloadingView } from './reloadingView';

/** When a schedule fires next, as "in 3 h" with the exact time as a tooltip. */
export function nextRun(sched: ISchedule): HTMLElement {
  if (sched.paused) {
    return h('span', { class: 'nbserve-muted', text: 'paused' });
  }
  if (!sched.next_run_at) {
    return h('span', { class: 'nbserve-muted', text: '–' });
  }
  const date = new Date(sched.next_run_at);
  const seconds = (date.getTime() - Date.now()) / 1000;
  let text: string;
  if (isNaN(seconds)) {
    text = sched.next_run_at;
  } else if (seconds < 60) {
    text = 'in < 1 min';
  } else if (seconds < 3600) {
    text = `in ${Math.round(seconds / 60)} min`;
  } else if (seconds < 86400 * 2) {
    text = `in ${Math.round(seconds / 3600)} h`;
  } else {
    text = date.toLocaleDateString();
  }
  return h('time', { text, title: `${date.toLocaleString()} (your time)` });
}

/** A run's status as a coloured word. */
export function runStatus(status: string): HTMLElement {
  return h('span', { class: `nbserve-run-status nbserve-run-${status}`, text: status, data: { status } });
}

/** "succeeded · v3 · 2 min ago", or the reason/error of a run that produced nothing. */
function lastRunLine(run: IScheduleRun | null, running: number | null): HTMLElement {
  if (!run) {
    return h('div', { class: 'nbserve-sched-last nbserve-muted', text: running !== null ? 'running…' : 'never ran' });
  }
  const why = run.error ?? run.reason;
  return h(
    'div',
    { class: 'nbserve-sched-last', title: why ?? '' },
    'last run ',
    runStatus(run.status),
    run.version !== null && run.version !== undefined ? h('span', { class: 'nbserve-version-tag', text: `v${run.version}` }) : null,
    ago(run.started_at),
    why ? h('span', { class: 'nbserve-sched-reason', text: why }) : null
  );
}

export class ScheduleList extends Widget {
  constructor(readonly model: DeploymentsModel, readonly commands: CommandRegistry) {
    super();
    this.addClass('nbserve-Schedules');
    model.changed.connect(this.render, this);
    this.render();
  }

  /** Emitted with a schedule's name when the user opens it. */
  get selected(): ISignal<this, string> {
    return this._selected;
  }

  render(): void {
    const { schedules, loaded } = this.model;
    const key = JSON.stringify([loaded, schedules, Math.floor(Date.now() / 60000)]);
    if (key === this._rendered && this.node.childElementCount > 0) {
      return;
    }
    this._rendered = key;
    const head = h('h2', { class: 'nbserve-heading nbserve-sched-heading', text: `Schedules${loaded ? ` (${schedules.length})` : ''}` });
    if (!loaded) {
      this.node.replaceChildren(head);
      return;
    }
    if (schedules.length === 0) {
      this.node.replaceChildren(
        head,
        h('div', { class: 'nbserve-empty' }, h('p', { text: 'No scheduled retraining.' }), h('pre', { text: 'nbserve schedule add NOTEBOOK --cron "0 3 * * *" --name NAME' }))
      );
      return;
    }
    const list = h('ul', { class: 'nbserve-rows' });
    for (const sched of schedules) {
      list.appendChild(this.row(sched));
    }
    this.node.replaceChildren(head, list);
  }

  private row(sched: ISchedule): HTMLElement {
    const state = sched.paused ? 'paused' : sched.running_run !== null ? 'running' : 'active';
    const toggle = sched.paused
      ? button('Resume', () => void this.commands.execute('nbserve:resume-schedule', { name: sched.name }), 'nbserve-sched-resume')
      : button('Pause', () => void this.commands.execute('nbserve:pause-schedule', { name: sched.name }), 'nbserve-sched-pause');
    const li = h(
      'li',
      { class: `nbserve-row nbserve-sched-row nbserve-sched-${state}`, data: { name: sched.name, state, paused: String(sched.paused) } },
      h(
        'div',
        { class: 'nbserve-row-head' },
        h('span', { class: 'nbserve-name', text: sched.name }),
        h('span', { class: 'nbserve-sched-deployment', text: `→ ${sched.deployment}`, title: 'the deployment it retrains' }),
        h('span', { class: `nbserve-sched-state nbserve-sched-state-${state}`, text: state })
      ),
      h(
        'div',
        { class: 'nbserve-sched-when' },
        h('code', { text: sched.cron, title: 'cron expression' }),
        h('span', { class: 'nbserve-muted', text: sched.timezone }),
        h('span', { class: 'nbserve-muted', text: '· next' }),
        nextRun(sched)
      ),
      lastRunLine(sched.last_run, sched.running_run),
      h(
        'div',
        { class: 'nbserve-sched-actions' },
        button('Run now', () => void this.commands.execute('nbserve:run-schedule', { name: sched.name }), 'nbserve-sched-run'),
        toggle
      )
    );
    li.tabIndex = 0;
    li.title = `Open ${sched.name}: ${sched.notebook}`;
    li.addEventListener('click', () => this._selected.emit(sched.name));
    li.addEventListener('keydown', event => {
      if (event.key === 'Enter' && event.target === li) {
        this._selected.emit(sched.name);
      }
    });
    return li;
  }

  private _selected = new Signal<this, string>(this);
  private _rendered = '';
}

export class ScheduleDetail extends ReloadingView<ISchedule, PromiseSettledResult<IScheduleDetail>> {
  constructor(
    model: DeploymentsModel,
    readonly commands: CommandRegistry,
    readonly openNotebook: (path: string) => void
  ) {
    super(model);
    this.addClass('nbserve-ScheduleDetail');
  }

  protected brief(name: string): ISchedule | undefined {
    return this.model.findSchedule(name);
  }

  /** Anything in the list's row: a run started or ended, paused, rescheduled. */
  protected stamp(brief: ISchedule | undefined): string {
    return JSON.stringify(brief ?? null);
  }

  protected forget(): void {
    this._detail = null;
  }

  protected async fetch(name: string): Promise<PromiseSettledResult<IScheduleDetail>> {
    const [detail] = await Promise.allSettled([this.model.api.schedule(name)]);
    return detail;
  }

  protected keep(detail: PromiseSettledResult<IScheduleDetail>): void {
    if (detail.status === 'fulfilled') {
      this._detail = detail.value;
      this.loadError = null;
    } else {
      this.loadError = asApiError(detail.reason);
    }
    this.render();
  }

  protected body(): HTMLElement[] {
    const d = this._detail;
    if (!d) {
      return [];
    }
    const state = d.paused ? 'paused' : d.running_run !== null ? 'running' : 'active';
    const params = Object.entries(d.parameters ?? {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ') || 'none';
    return [
      h(
        'div',
        { class: 'nbserve-detail-head' },
        h(
          'div',
          { class: 'nbserve-row-head' },
          h('span', { class: 'nbserve-name nbserve-title', text: d.name }),
          h('span', { class: 'nbserve-sched-deployment', text: `→ ${d.deployment}` }),
          h('span', { class: `nbserve-sched-state nbserve-sched-state-${state}`, text: state })
        ),
        h('div', { class: 'nbserve-sched-when' }, h('code', { text: d.cron }), h('span', { class: 'nbserve-muted', text: d.timezone }), h('span', { class: 'nbserve-muted', text: '· next' }), nextRun(d)),
        h('div', { class: 'nbserve-version-meta', title: d.notebook, text: d.notebook }),
        h('div', { class: 'nbserve-muted', text: `parameters: ${params} · kernel ${d.kernel} · timeout ${fmt(d.timeout_seconds)} s · missed runs: ${d.missed}` })
      ),
      h(
        'div',
        { class: 'nbserve-actions' },
        button('Run now', () => void this.commands.execute('nbserve:run-schedule', { name: d.name }), 'nbserve-sched-run'),
        d.paused
          ? button('Resume', () => void this.commands.execute('nbserve:resume-schedule', { name: d.name }), 'nbserve-sched-resume')
          : button('Pause', () => void this.commands.execute('nbserve:pause-schedule', { name: d.name }), 'nbserve-sched-pause')
      ),
      this.runs(d.runs)
    ];
  }

  private runs(runs: IScheduleRun[]): HTMLElement {
    const box = h('section', { class: 'nbserve-section', data: { section: 'runs' } }, h('h3', { text: `Runs (${runs.length})` }));
    if (runs.length === 0) {
      box.appendChild(h('div', { class: 'nbserve-muted', text: 'none yet' }));
      return box;
    }
    const table = h('table', { class: 'nbserve-runs' });
    table.appendChild(h('thead', {}, h('tr', {}, ...['run', 'status', 'started', 'took', 'version'].map(t => h('th', { text: t })))));
    const wide = (cls: string, ...children: (HTMLElement | string)[]): HTMLElement => {
      const cell = h('td', { class: cls }, ...children);
      cell.colSpan = 5;
      return h('tr', { class: `${cls}-row` }, cell);
    };
    for (const run of [...runs].sort((a, b) => b.id - a.id)) {
      const why = run.error ?? run.reason;
      const group = h('tbody', { class: 'nbserve-run', data: { run: String(run.id), status: run.status } });
      group.appendChild(
        h(
          'tr',
          { class: 'nbserve-run-row', data: { run: String(run.id), status: run.status } },
          h('td', { text: `#${run.id}`, title: `trigger: ${run.trigger}` }),
          h('td', {}, runStatus(run.status)),
          h('td', {}, ago(run.started_at)),
          h('td', { text: run.duration_seconds === null || run.duration_seconds === undefined ? '–' : `${fmt(run.duration_seconds)} s` }),
          h('td', { text: run.version === null || run.version === undefined ? '–' : `v${run.version}` })
        )
      );
      if (why) {
        group.appendChild(wide('nbserve-run-why', why));
      }
      if (run.executed_notebook) {
        group.appendChild(wide('nbserve-run-notebook', this.notebookLink(run)));
      }
      table.appendChild(group);
    }
    box.appendChild(table);
    return box;
  }

  /** A link that opens the executed notebook in JupyterLab when it is under the server's root, else its path. */
  private notebookLink(run: IScheduleRun): HTMLElement {
    const path = run.executed_notebook;
    if (!path) {
      return h('span', { class: 'nbserve-muted', text: '–' });
    }
    const labPath = run.executed_notebook_lab_path;
    if (!labPath) {
      return h('code', { class: 'nbserve-run-path', text: path, title: `${path}\n(outside the Jupyter server's root: JupyterLab cannot open it)` });
    }
    const link = h('a', { class: 'nbserve-run-link', text: labPath.split('/').pop() ?? labPath, title: `Open ${labPath}` });
    link.href = '#';
    link.addEventListener('click', event => {
      event.preventDefault();
      event.stopPropagation();
      this.openNotebook(labPath);
    });
    return link;
  }

  private _detail: IScheduleDetail | null = null;
}
