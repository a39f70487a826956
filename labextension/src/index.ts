/**
 * nbserve for JupyterLab: a sidebar panel with every deployment, and palette commands.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISanitizer, Notification, Sanitizer } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { Actions, notifyError, rollbackTargets } from './actions';
import { notifyEvent } from './notify';
import { IScaleChanges, NbserveAPI } from './api';
import { IHtmlSanitizer, ModelCards } from './cardView';
import { nbserveIcon } from './icons';
import { DeploymentsModel } from './model';
import { DeploymentsPanel } from './panel';

namespace CommandIDs {
  export const show = 'nbserve:show-deployments';
  export const rollback = 'nbserve:rollback';
  export const stop = 'nbserve:stop';
  export const start = 'nbserve:start';
  export const openInNotebook = 'nbserve:open-in-notebook';
  export const promote = 'nbserve:promote';
  export const abort = 'nbserve:abort-rollout';
  export const setCanary = 'nbserve:set-canary';
  export const runSchedule = 'nbserve:run-schedule';
  export const pauseSchedule = 'nbserve:pause-schedule';
  export const resumeSchedule = 'nbserve:resume-schedule';
  export const modelCard = 'nbserve:open-model-card';
  export const scale = 'nbserve:scale';
}

const CATEGORY = 'nbserve';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbserve-labextension:plugin',
  description: 'nbserve deployments panel: every deployment at a glance, rollback in a click.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, ISanitizer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    sanitizer: IHtmlSanitizer | null
  ) => {
    const api = new NbserveAPI(app.serviceManager.serverSettings);
    // model cards are HTML: JupyterLab's sanitizer (its configured service, else the default)
    const cards = new ModelCards(app, api, sanitizer ?? new Sanitizer());
    const model = new DeploymentsModel(api);
    const actions = new Actions(app, model, notebooks);
    const openNotebook = (path: string): void => {
      void app.commands.execute('docmanager:open', { path }).catch(reason => notifyError(`Opening ${path}`, reason));
    };
    const panel = new DeploymentsPanel(model, app.commands, openNotebook);
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, 'nbserve-deployments');

    // One notification when the panel cannot reach nbserve; the panel shows it until it recovers.
    model.errorChanged.connect((_, error) => {
      if (error) {
        notifyError('nbserve deployments', error);
      }
    });

    // A gate breach, a promotion or a failed deploy seen by the poll: one notification each.
    model.newEvents.connect((_, { name, events }) => {
      for (const event of events) {
        notifyEvent(name, event, () => {
          app.shell.activateById(panel.id);
          panel.show_(name);
        });
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

    app.commands.addCommand(CommandIDs.promote, {
      label: args => (name(args) ? `Promote ${name(args)}'s canary` : 'nbserve: promote canary…'),
      caption: 'Make a canary (or shadow) version live',
      execute: args => actions.promote(name(args))
    });
    app.commands.addCommand(CommandIDs.abort, {
      label: args => (name(args) ? `Abort ${name(args)}'s rollout` : 'nbserve: abort rollout…'),
      caption: 'End a canary or shadow: the live version serves everything',
      execute: args => actions.abort(name(args))
    });
    app.commands.addCommand(CommandIDs.setCanary, {
      label: args => (name(args) ? `Change ${name(args)}'s canary share` : 'nbserve: change canary share…'),
      execute: args => actions.setCanary(name(args), typeof args.percent === 'number' ? args.percent : null)
    });
    app.commands.addCommand(CommandIDs.scale, {
      label: args => (name(args) ? `Scale ${name(args)}…` : 'nbserve: scale deployment…'),
      caption: 'Change a deployment’s workers, memory and CPU caps, idle timeout or adaptive batching',
      execute: args => {
        const changes: IScaleChanges = {};
        for (const key of ['workers', 'memory', 'cpus', 'idle_timeout'] as const) {
          const value = args[key];
          if (typeof value === 'number' || typeof value === 'string') {
            (changes as Record<string, number | string>)[key] = value;
          }
        }
        // batching: true/false, or the knobs as an object (as the Scale… dialog sends them)
        const batching = args.batching;
        if (typeof batching === 'boolean') {
          changes.batching = batching;
        } else if (batching && typeof batching === 'object' && !Array.isArray(batching)) {
          changes.batching = batching as IScaleChanges['batching'];
        }
        return actions.scale(name(args), Object.keys(changes).length > 0 ? changes : null);
      }
    });
    app.commands.addCommand(CommandIDs.runSchedule, {
      label: args => (name(args) ? `Run ${name(args)} now` : 'nbserve: run schedule now…'),
      caption: 'Run a scheduled notebook now',
      execute: args => actions.runSchedule(name(args))
    });
    app.commands.addCommand(CommandIDs.pauseSchedule, {
      label: args => (name(args) ? `Pause ${name(args)}` : 'nbserve: pause schedule'),
      isEnabled: args => !!name(args),
      execute: args => (name(args) ? actions.pauseSchedule(name(args)!) : false)
    });
    app.commands.addCommand(CommandIDs.resumeSchedule, {
      label: args => (name(args) ? `Resume ${name(args)}` : 'nbserve: resume schedule'),
      isEnabled: args => !!name(args),
      execute: args => (name(args) ? actions.resumeSchedule(name(args)!) : false)
    });

    app.commands.addCommand(CommandIDs.modelCard, {
      label: args =>
        name(args) ? `Model card of ${name(args)}${typeof args.version === 'number' ? ` v${args.version}` : ''}` : 'nbserve: open model card…',
      caption: 'What a version is, where it came from, its input schema and how it has done so far',
      execute: async args => {
        // a name given (the panel's buttons) goes straight to the card route: an unknown one is its 404
        const which = name(args) ?? (await actions.pickDeployment('Open the model card of which deployment?'))?.name;
        if (!which) {
          return false;
        }
        const version = typeof args.version === 'number' ? args.version : null;
        try {
          await cards.open(which, version);
        } catch (reason) {
          notifyError(`Model card of ${which}${version === null ? '' : ` v${version}`}`, reason);
          return false;
        }
        return true;
      }
    });

    if (palette) {
      for (const command of [CommandIDs.show, CommandIDs.rollback, CommandIDs.stop, CommandIDs.start, CommandIDs.openInNotebook,
        CommandIDs.promote, CommandIDs.abort, CommandIDs.setCanary, CommandIDs.scale, CommandIDs.runSchedule, CommandIDs.modelCard]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
