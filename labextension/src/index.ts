/**
 * nbserve for JupyterLab: a sidebar panel with every deployment, and palette commands.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { Actions, notifyError, rollbackTargets } from './actions';
import { NbserveAPI } from './api';
import { nbserveIcon } from './icons';
import { DeploymentsModel } from './model';
import { DeploymentsPanel } from './panel';

namespace CommandIDs {
  export const show = 'nbserve:show-deployments';
  export const rollback = 'nbserve:rollback';
  export const stop = 'nbserve:stop';
  export const start = 'nbserve:start';
  export const openInNotebook = 'nbserve:open-in-notebook';
}

const CATEGORY = 'nbserve';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbserve-labextension:plugin',
  description: 'nbserve deployments panel: every deployment at a glance, rollback in a click.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null
  ) => {
    const api = new NbserveAPI(app.serviceManager.serverSettings);
    const model = new DeploymentsModel(api);
    const actions = new Actions(app, model, notebooks);
    const panel = new DeploymentsPanel(model, app.commands);
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, 'nbserve-deployments');

    // One notification when the panel cannot reach nbserve; the panel shows it until it recovers.
    model.errorChanged.connect((_, error) => {
      if (error) {
        notifyError('nbserve deployments', error);
      }
    });

    const name = (args: any): string | undefined => (typeof args.name === 'string' ? args.name : undefined);
    const version = (args: any): number | null => (typeof args.to === 'number' ? args.to : null);

    app.commands.addCommand(CommandIDs.show, {
      label: 'nbserve: show deployments',
      caption: 'Show the nbserve deployments panel',
      icon: args => (args.isPalette ? undefined : nbserveIcon),
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.rollback, {
      label: args => (name(args) ? `Roll back ${name(args)}` : 'nbserve: rollback deployment…'),
      caption: 'Point a deployment’s stable URL at an earlier version',
      execute: args => actions.rollback(name(args), version(args))
    });
    app.commands.addCommand(CommandIDs.stop, {
      label: args => (name(args) ? `Stop ${name(args)}` : 'nbserve: stop deployment…'),
      execute: args => actions.stop(name(args))
    });
    app.commands.addCommand(CommandIDs.start, {
      label: args => (name(args) ? `Start ${name(args)}` : 'nbserve: start deployment…'),
      execute: args => actions.start(name(args))
    });
    app.commands.addCommand(CommandIDs.openInNotebook, {
      label: args => (name(args) ? `Open ${name(args)} in notebook` : 'nbserve: open deployment in notebook…'),
      execute: async args => {
        const dep = await actions.pickDeployment('Insert a %deploy cell for which deployment?', name(args));
        if (!dep) {
          return false;
        }
        const inserted = await actions.openInNotebook(dep.name, rollbackTargets(dep)[0] ?? null);
        if (inserted) {
          Notification.info(`Inserted a %deploy cell for ${dep.name}`, { autoClose: 3000 });
        }
        return inserted;
      }
    });

    if (palette) {
      for (const command of [CommandIDs.show, CommandIDs.rollback, CommandIDs.stop, CommandIDs.start, CommandIDs.openInNotebook]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
