/**
 * What the panel and the command palette do: every action asks for confirmation, reports
 * the agent's message as a JupyterLab notification, and refreshes the panel's model.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, InputDialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { IDeploymentBrief, IDeploymentState, IScaleChanges, ISchedule, NbserveApiError, asApiError } from './api';
import { DeploymentsModel } from './model';
import { fmtPercent, rolloutLabel } from './dom';
import { ScaleForm, describeScale } from './resources';

/** Show an error from the server as a notification, with a "Details" action. */
export function notifyError(what: string, reason: unknown): NbserveApiError {
  const error = asApiError(reason);
  const details = [error.message, error.hint ? `hint: ${error.hint}` : '', `(${error.type}, HTTP ${error.status})`]
    .filter(Boolean)
    .join('\n');
  Notification.error(`${what}: ${error.text}`, {
    autoClose: 10000,
    actions: [
      {
        label: 'Details',
        callback: () => void showErrorMessage(what, details)
      }
    ]
  });
  return error;
}

/** Versions the stable URL can be moved back to: anything that served, except the live one. */
export function rollbackTargets(dep: IDeploymentState): number[] {
  return dep.versions
    .filter(v => v.number !== dep.version && ['warm', 'stopped', 'live'].includes(v.status))
    .map(v => v.number)
    .sort((a, b) => b - a);
}

/** An action's in-progress notification shows after this long (ms), and for at least PROGRESS_SHOWN. */
const PROGRESS_AFTER = 400;
const PROGRESS_SHOWN = 800;

/** Preset canary shares offered by the panel. */
export const CANARY_PRESETS = [5, 10, 25, 50, 75];

export class Actions {
  constructor(
    readonly app: JupyterFrontEnd,
    readonly model: DeploymentsModel,
    readonly notebooks: INotebookTracker | null
  ) {}

  /** Ask which deployment (when not given), from the current list. */
  async pickDeployment(title: string, name?: string): Promise<IDeploymentBrief | null> {
    let list: IDeploymentBrief[];
    try {
      list = await this.model.api.list();
    } catch (reason) {
      notifyError('nbserve', reason);
      return null;
    }
    if (name) {
      const found = list.find(d => d.name === name);
      if (!found) {
        Notification.error(`nbserve: no deployment is called ${name}`, { autoClose: 8000 });
      }
      return found ?? null;
    }
    if (list.length === 0) {
      Notification.info('nbserve: there are no deployments yet; deploy one with %deploy', { autoClose: 6000 });
      return null;
    }
    const result = await InputDialog.getItem({
      title,
      items: list.map(d => d.name),
      current: 0
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    return list.find(d => d.name === result.value) ?? null;
  }

  async rollback(name?: string, to?: number | null): Promise<boolean> {
    const dep = await this.pickDeployment('Roll back which deployment?', name);
    if (!dep) {
      return false;
    }
    let target = to ?? null;
    if (target === null) {
      const targets = rollbackTargets(dep);
      if (targets.length === 0) {
        Notification.info(`nbserve: ${dep.name} has no other version that served`, { autoClose: 6000 });
        return false;
      }
      const labels = targets.map(n => `v${n} (${dep.versions.find(v => v.number === n)?.status})`);
      const choice = await InputDialog.getItem({
        title: `Roll back ${dep.name} (live: v${dep.version ?? '–'}) to`,
        items: labels,
        current: 0
      });
      if (!choice.button.accept || !choice.value) {
        return false;
      }
      target = targets[labels.indexOf(choice.value)];
    }
    const confirmed = await showDialog({
      title: `Roll back ${dep.name} to version ${target}?`,
      body:
        `The stable URL ${dep.url ?? ''} will answer from version ${target} ` +
        `instead of version ${dep.version ?? '–'}. Version ${target} is started first if it is not warm.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Roll back' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    return this.run(`Rolling back ${dep.name} to v${target}`, async () => {
      const state = await this.model.api.rollback(dep.name, target);
      return `${dep.name}: v${state.version} is live`;
    });
  }

  async stop(name?: string): Promise<boolean> {
    const dep = await this.pickDeployment('Stop which deployment?', name);
    if (!dep) {
      return false;
    }
    const confirmed = await showDialog({
      title: `Stop ${dep.name}?`,
      body: `Every serving process of ${dep.name} stops; its stable URL ${dep.url ?? ''} answers 503 until it is started again.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    return this.run(`Stopping ${dep.name}`, async () => {
      await this.model.api.stop(dep.name);
      return `${dep.name} is stopped`;
    });
  }

  async start(name?: string): Promise<boolean> {
    const dep = await this.pickDeployment('Start which deployment?', name);
    if (!dep) {
      return false;
    }
    const confirmed = await showDialog({
      title: `Start ${dep.name}?`,
      body: `Serve version ${dep.version ?? '–'} of ${dep.name} again at ${dep.url ?? 'its stable URL'}.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    return this.run(`Starting ${dep.name}`, async () => {
      const state = await this.model.api.start(dep.name);
      return `${dep.name}: ${state.status}`;
    });
  }

  /** Ask which deployment with a rollout under way (when not given). */
  async pickRollout(title: string, name?: string, mode?: 'canary' | 'shadow'): Promise<IDeploymentBrief | null> {
    if (name) {
      return this.pickDeployment(title, name);
    }
    let list: IDeploymentBrief[];
    try {
      list = (await this.model.api.list()).filter(d => d.rollout && (!mode || d.rollout.mode === mode));
    } catch (reason) {
      notifyError('nbserve', reason);
      return null;
    }
    if (list.length === 0) {
      Notification.info(`nbserve: no deployment has a ${mode ?? 'canary or shadow'} under way`, { autoClose: 6000 });
      return null;
    }
    const labels = list.map(d => `${d.name} (${rolloutLabel(d)})`);
    const result = await InputDialog.getItem({ title, items: labels, current: 0 });
    if (!result.button.accept || !result.value) {
      return null;
    }
    return list[labels.indexOf(result.value)] ?? null;
  }

  async promote(name?: string): Promise<boolean> {
    const dep = await this.pickRollout('Promote which canary or shadow?', name);
    if (!dep) {
      return false;
    }
    const r = dep.rollout;
    if (!r) {
      Notification.info(`nbserve: ${dep.name} has no canary or shadow to promote`, { autoClose: 6000 });
      return false;
    }
    const confirmed = await showDialog({
      title: `Promote ${dep.name} v${r.version}?`,
      body:
        `The ${r.mode} v${r.version} becomes live: the stable URL ${dep.url ?? ''} answers every request from it ` +
        `instead of v${dep.version ?? '–'}, which stays warm for a rollback.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Promote' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    this.model.expect(dep.name, 'promoted');
    return this.run(`Promoting ${dep.name} v${r.version}`, async () => {
      const state = await this.model.api.promote(dep.name);
      return `${dep.name}: v${state.version} promoted, it is live`;
    });
  }

  async abort(name?: string): Promise<boolean> {
    const dep = await this.pickRollout('Abort the rollout of which deployment?', name);
    if (!dep) {
      return false;
    }
    const r = dep.rollout;
    const what = r ? `the ${r.mode} v${r.version}` : 'its rollout';
    const confirmed = await showDialog({
      title: `Abort ${r ? `${r.mode} v${r.version} of ` : 'the rollout of '}${dep.name}?`,
      body:
        `${what[0].toUpperCase()}${what.slice(1)} is taken out of the traffic at once and its server stops; ` +
        `v${dep.version ?? '–'} keeps serving everything.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Abort rollout' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    this.model.expect(dep.name, 'aborted');
    return this.run(`Aborting ${what} of ${dep.name}`, async () => {
      const state = await this.model.api.abort(dep.name);
      return `${dep.name}: rollout aborted, v${state.version ?? '–'} serves everything`;
    });
  }

  /** Change the canary's share; asks for it (presets or a number) when not given. */
  async setCanary(name?: string, percent?: number | null): Promise<boolean> {
    const dep = await this.pickRollout('Change the canary share of which deployment?', name, 'canary');
    if (!dep) {
      return false;
    }
    const r = dep.rollout;
    if (!r || r.mode !== 'canary') {
      Notification.info(`nbserve: ${dep.name} has no canary under way`, { autoClose: 6000 });
      return false;
    }
    let share = percent ?? null;
    if (share === null) {
      const result = await InputDialog.getNumber({
        title: `Share of requests for canary v${r.version} of ${dep.name} (%)`,
        value: r.percent ?? 10
      });
      if (!result.button.accept || result.value === null || isNaN(result.value)) {
        return false;
      }
      share = result.value;
    }
    const confirmed = await showDialog({
      title: `Send ${fmtPercent(share)} of requests to canary v${r.version}?`,
      body: `${dep.name}'s stable URL sends ${fmtPercent(share)} of new requests to v${r.version} (now ${fmtPercent(r.percent)}); the rest stay on v${dep.version ?? '–'}.`,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: `Set ${fmtPercent(share)}` })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    const value = share;
    return this.run(`Setting ${dep.name}'s canary to ${fmtPercent(value)}`, async () => {
      const state = await this.model.api.setCanary(dep.name, value);
      return `${dep.name}: canary v${state.rollout?.version ?? r.version} gets ${fmtPercent(state.rollout?.percent ?? value)}`;
    });
  }

  /**
   * Change workers, caps or the idle timeout: a form (unless `changes` are given), then the
   * confirmation. A serving deployment's live server is replaced without dropping a request.
   */
  async scale(name?: string, changes?: IScaleChanges | null): Promise<boolean> {
    const dep = await this.pickDeployment('Scale which deployment?', name);
    if (!dep) {
      return false;
    }
    let wanted = changes ?? null;
    if (wanted === null) {
      const form = await showDialog<IScaleChanges>({
        title: `Scale ${dep.name}`,
        body: new ScaleForm(dep.resources),
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Next…' })],
        focusNodeSelector: 'input'
      });
      if (!form.button.accept || !form.value) {
        return false;
      }
      wanted = form.value;
    }
    const what = describeScale(wanted);
    if (!what) {
      Notification.info(`nbserve: nothing to change for ${dep.name}`, { autoClose: 4000 });
      return false;
    }
    const serving = dep.status === 'serving' && dep.version !== null;
    const confirmed = await showDialog({
      title: `Scale ${dep.name}: ${what}?`,
      body: serving
        ? `A new server for v${dep.version} starts with these settings beside the running one; ` +
          `the stable URL ${dep.url ?? ''} switches to it once it is ready, and the old one drains ` +
          `its requests first. Other warm versions keep theirs until they start again.`
        : `${dep.name} is ${dep.status}: the settings apply when it next starts.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Scale' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    const value = wanted;
    return this.run(`Scaling ${dep.name} (${what})`, async () => {
      const state = await this.model.api.scale(dep.name, value);
      return `${dep.name}: ${what} (${state.status})`;
    });
  }

  /** Ask which schedule (when not given), from the agent's list. */
  async pickSchedule(title: string, name?: string): Promise<ISchedule | null> {
    let list: ISchedule[];
    try {
      list = await this.model.api.schedules();
    } catch (reason) {
      notifyError('nbserve', reason);
      return null;
    }
    if (name) {
      const found = list.find(s => s.name === name);
      if (!found) {
        Notification.error(`nbserve: no schedule is called ${name}`, { autoClose: 8000 });
      }
      return found ?? null;
    }
    if (list.length === 0) {
      Notification.info('nbserve: there are no schedules yet; add one with `nbserve schedule add`', { autoClose: 6000 });
      return null;
    }
    const result = await InputDialog.getItem({ title, items: list.map(s => s.name), current: 0 });
    if (!result.button.accept || !result.value) {
      return null;
    }
    return list.find(s => s.name === result.value) ?? null;
  }

  async runSchedule(name?: string): Promise<boolean> {
    const sched = await this.pickSchedule('Run which schedule now?', name);
    if (!sched) {
      return false;
    }
    const confirmed = await showDialog({
      title: `Run ${sched.name} now?`,
      body:
        `The agent executes ${basename(sched.notebook)} now with the schedule's parameters; ` +
        `what it deploys to ${sched.deployment} goes through the usual checks.` +
        (sched.running_run !== null ? ` A run is in progress: this one will be recorded as skipped.` : ''),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run now' })]
    });
    if (!confirmed.button.accept) {
      return false;
    }
    return this.run(`Starting a run of ${sched.name}`, async () => {
      const run = await this.model.api.runSchedule(sched.name);
      return run.status === 'skipped'
        ? `${sched.name}: run ${run.id} skipped${run.reason ? ` (${run.reason})` : ''}`
        : `${sched.name}: run ${run.id} ${run.status}`;
    });
  }

  async pauseSchedule(name: string): Promise<boolean> {
    return this.run(`Pausing ${name}`, async () => {
      await this.model.api.pauseSchedule(name);
      return `${name} is paused`;
    });
  }

  async resumeSchedule(name: string): Promise<boolean> {
    return this.run(`Resuming ${name}`, async () => {
      const sched = await this.model.api.resumeSchedule(name);
      return `${name} resumed${sched.next_run_at ? `; next run ${new Date(sched.next_run_at).toLocaleString()}` : ''}`;
    });
  }

  /** Insert a cell with the matching `%deploy` commands below the active cell of the current notebook. */
  async openInNotebook(name: string, rollbackTo: number | null = null): Promise<boolean> {
    const panel = this.notebooks?.currentWidget ?? null;
    if (!panel) {
      Notification.warning('nbserve: open a notebook first; the cell goes into the current notebook', {
        autoClose: 6000
      });
      return false;
    }
    const notebook = panel.content;
    NotebookActions.insertBelow(notebook);
    NotebookActions.changeCellType(notebook, 'code');
    const cell = notebook.activeCell;
    if (!cell) {
      return false;
    }
    const lines = [
      '%load_ext nbserve',
      `%deploy --history ${name}`,
      `# redeploy:  %deploy MODEL --name ${name} --sample SAMPLE`,
      `# roll back: %deploy --rollback ${name}${rollbackTo !== null ? ` --to ${rollbackTo}` : ''}`,
      `# logs:      %deploy --logs ${name}`
    ];
    cell.model.sharedModel.setSource(lines.join('\n'));
    this.app.shell.activateById(panel.id);
    notebook.activate();
    return true;
  }

  /**
   * Run an action with an in-progress notification that becomes its outcome. JupyterLab's
   * toast drops an update (or a dismissal) that arrives before the toast is on screen, which
   * left a fast action's "in progress" toast up for good: so it appears only for actions
   * slower than PROGRESS_AFTER and is changed no sooner than PROGRESS_SHOWN after it appeared.
   */
  private async run(what: string, action: () => Promise<string>): Promise<boolean> {
    const progress = { id: null as string | null, at: 0 };
    const timer = window.setTimeout(() => {
      progress.id = Notification.emit(`${what}…`, 'in-progress', { autoClose: false });
      progress.at = Date.now();
    }, PROGRESS_AFTER);
    const settled = async (): Promise<string | null> => {
      window.clearTimeout(timer);
      const wait = progress.id === null ? 0 : progress.at + PROGRESS_SHOWN - Date.now();
      if (wait > 0) {
        await new Promise(resolve => window.setTimeout(resolve, wait));
      }
      return progress.id;
    };
    try {
      const done = await action();
      const id = await settled();
      if (id === null) {
        Notification.success(done, { autoClose: 4000 });
      } else {
        Notification.update({ id, message: done, type: 'success', autoClose: 4000 });
      }
      return true;
    } catch (reason) {
      const id = await settled();
      if (id !== null) {
        Notification.dismiss(id);
      }
      notifyError(what, reason);
      return false;
    } finally {
      await this.model.refresh();
    }
  }
}

function basename(path: string): string {
  return path.split('/').pop() ?? path;
}
