/**
 * The detail's "Logs" section: one version's server log (a select picks which), the lines that
 * matter highlighted, scrolled to the end.
 */
import type { LogsOut } from './agentTypes';
import type { IDeploymentDetail } from './api';
import { h, section } from './dom';

/** Lines that explain a failure; highlighted. */
const ERROR_LINES = /error|exception|traceback|failed|critical/i;

/** A version's log as the detail keeps it: the agent's answer, or the error in its place. */
export type LogLines = Pick<LogsOut, 'text'> & { version: number | null };

/** `pick(version)`: what choosing another version in the select does. */
export function logsSection(
  detail: IDeploymentDetail,
  logs: LogLines | null,
  pick: (version: number) => void
): HTMLElement {
  const select = h('select', { class: 'nbserve-log-version jp-mod-styled', title: 'which version’s server log' });
  const shown = logs?.version ?? detail.version;
  for (const row of [...detail.history].sort((a, b) => b.version - a.version)) {
    const option = h('option', { text: `v${row.version} (${row.status})` });
    option.value = String(row.version);
    option.selected = row.version === shown;
    select.appendChild(option);
  }
  select.addEventListener('change', () => pick(Number(select.value)));
  const pre = h('pre', { class: 'nbserve-log' });
  const lines = (logs?.text ?? '').split('\n');
  const errors = lines.filter(l => ERROR_LINES.test(l)).length;
  for (const line of lines) {
    pre.appendChild(h('span', { class: ERROR_LINES.test(line) ? 'nbserve-log-line nbserve-log-error' : 'nbserve-log-line', text: line + '\n' }));
  }
  const head = h('div', { class: 'nbserve-log-head' }, select, h('span', { class: 'nbserve-muted', text: errors ? `${errors} error line${errors > 1 ? 's' : ''} highlighted` : '' }));
  const box = section('Logs', head, pre);
  requestAnimationFrame(() => (pre.scrollTop = pre.scrollHeight));
  return box;
}
