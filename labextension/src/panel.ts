/** The sidebar panel: the list of deployments, or one deployment's detail. */
import { refreshIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { DeploymentDetail } from './detailView';
import { h } from './dom';
import { nbserveIcon } from './icons';
import { DeploymentList } from './listView';
import { DeploymentsModel } from './model';

export class DeploymentsPanel extends Panel {
  constructor(readonly model: DeploymentsModel, commands: CommandRegistry) {
    super();
    this.id = 'nbserve-deployments';
    this.addClass('nbserve-Panel');
    this.title.icon = nbserveIcon;
    this.title.caption = 'nbserve deployments';

    const header = new Widget({ node: this.headerNode() });
    header.addClass('nbserve-Header');
    this.list = new DeploymentList(model);
    this.detail = new DeploymentDetail(model, commands);
    this.detail.hide();
    this.addWidget(header);
    this.addWidget(this.list);
    this.addWidget(this.detail);

    this.list.selected.connect((_, name) => this.show_(name));
    this.detail.closed.connect(() => this.show_(null));
  }

  readonly list: DeploymentList;
  readonly detail: DeploymentDetail;

  /** Open one deployment's detail, or the list (null). */
  show_(name: string | null): void {
    if (name === null) {
      this.detail.hide();
      this.list.show();
      this.list.render();
    } else {
      this.list.hide();
      this.detail.show();
      void this.detail.open(name);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  private headerNode(): HTMLElement {
    const refresh = h('button', { class: 'nbserve-icon-button nbserve-refresh', title: 'Refresh now' });
    refresh.type = 'button';
    refreshIcon.element({ container: refresh, height: '16px', width: '16px' });
    refresh.addEventListener('click', () => {
      void this.model.refresh();
      if (this.detail.isVisible) {
        void this.detail.reload();
      }
    });
    return h('div', {}, h('h2', { class: 'nbserve-heading', text: 'Deployments' }), refresh);
  }
}
