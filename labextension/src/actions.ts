/**
 * What the panel and the command palette do: every action asks for confirmation, reports
 * the agent's message as a JupyterLab notification, and refreshes the panel's model.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, InputDialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { IDeploymentBrief, IDeploymentState, NbserveApiError, asApiError } from './api';
import { DeploymentsModel } from './model';

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

  private async run(what: string, action: () => Promise<string>): Promise<boolean> {
    const id = Notification.emit(`${what}…`, 'in-progress', { autoClose: false });
    try {
      const done = await action();
      Notification.update({ id, message: done, type: 'success', autoClose: 4000 });
      return true;
    } catch (reason) {
      Notification.dismiss(id);
      notifyError(what, reason);
      return false;
    } finally {
      await this.model.refresh();
    }
  }
}
