/**
 * The detail's "Audit" section: who changed what, when and from where (newest first), and
 * whether the audit log's hash chain holds.
 */
import type { AuditOut } from './agentTypes';
import type { IAudit, IAuditChain, NbserveApiError } from './api';
import { ago, h, section } from './dom';

/** Audit actions shown as warnings: the agent or a user took traffic away from a version. */
const WARN_ACTIONS = /^(gate_breached|rollback|aborted)$/;

/** Who changed what, when, from where (newest first), and whether the hash chain holds. */
export function auditSection(name: string, audit: IAudit | null, error: NbserveApiError | null): HTMLElement {
  if (!audit) {
    const why = error ? error.text : 'loading…';
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
