/** The sidebar panel: deployments and schedules, or one deployment's or one schedule's detail. */
import { refreshIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { DeploymentDetail } from './detailView';
import { h } from './dom';
import { nbserveIcon } from './icons';
import { DeploymentList } from './listView';
import { DeploymentsModel } from './model';
import { ScheduleDetail, ScheduleList } from './scheduleView';

export class DeploymentsPanel extends Panel {
  constructor(
    readonly model: DeploymentsModel,
    commands: CommandRegistry,
    openNotebook: (path: string) => void = () => undefined
  ) {
    super();
    this.id = 'nbserve-deployments';
    this.addClass('nbserve-Panel');
    this.title.icon = nbserveIcon;
    this.title.caption = 'nbserve deployments';

    const header = new Widget({ node: this.headerNode() });
    header.addClass('nbserve-Header');
    this.list = new DeploymentList(model);
    this.detail = new DeploymentDetail(model, commands);
    this.schedules = new ScheduleList(model, commands);
    this.scheduleDetail = new ScheduleDetail(model, commands, openNotebook);
    this.detail.hide();
    this.scheduleDetail.hide();
    this.addWidget(header);
    this.addWidget(this.list);
    this.addWidget(this.schedules);
    this.addWidget(this.detail);
    this.addWidget(this.scheduleDetail);

    this.list.selected.connect((_, name) => this.show_(name));
    this.detail.closed.connect(() => this.show_(null));
    this.schedules.selected.connect((_, name) => this.showSchedule(name));
    this.scheduleDetail.closed.connect(() => this.show_(null));
  }

  readonly list: DeploymentList;
  readonly detail: DeploymentDetail;
  readonly schedules: ScheduleList;
  readonly scheduleDetail: ScheduleDetail;

  /** Open one deployment's detail, or the lists (null). */
  show_(name: string | null): void {
    this.scheduleDetail.hide();
    if (name === null) {
      this.detail.hide();
      this.list.show();
      this.schedules.show();
      this.list.render();
      this.schedules.render();
    } else {
      this.list.hide();
      this.schedules.hide();
      this.detail.show();
      void this.detail.open(name);
    }
  }

  /** Open one schedule's detail with its runs. */
  showSchedule(name: string): void {
    this.list.hide();
    this.schedules.hide();
    this.detail.hide();
    this.scheduleDetail.show();
    void this.scheduleDetail.open(name);
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
      if (this.scheduleDetail.isVisible) {
        void this.scheduleDetail.reload();
      }
    });
    return h('div', {}, h('h2', { class: 'nbserve-heading', text: 'Deployments' }), refresh);
  }
}
