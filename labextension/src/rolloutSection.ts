/**
 * The detail's "Rollout" section: the canary or shadow under way, its gates against the figures
 * so far, the verdict, and Promote, Abort and the canary's share presets.
 */
import type { CommandRegistry } from '@lumino/commands';

import type { IDeploymentDetail, IRollout } from './api';
import { CANARY_PRESETS } from './actions';
import { fmt } from './charts';
import { button, fmtPercent, h, rolloutLabel, section } from './dom';

/** The canary or shadow under way: share, age, gates against the figures so far, verdict, actions. */
export function rolloutSection(detail: IDeploymentDetail, r: IRollout, commands: CommandRegistry): HTMLElement {
  const name = detail.name;
  const f = r.figures ?? {};
  const gates = r.gates ?? {};
  const age = f.age_seconds ?? (r.started_at ? Date.now() / 1000 - r.started_at : null);
  const verdictText =
    r.verdict === 'breach'
      ? 'breach: rolling back'
      : r.verdict === 'pass'
        ? r.auto_promote
          ? 'gates passed: promoting'
          : 'gates passed for the window'
        : `waiting${(f.requests ?? 0) < Number(gates.min_requests ?? 0) ? ` for ${gates.min_requests} requests` : ''}`;
  const head = h(
    'div',
    { class: 'nbserve-rollout-head' },
    h('span', { class: `nbserve-rollout-badge nbserve-rollout-${r.mode}`, text: rolloutLabel(detail) }),
    h('span', { class: 'nbserve-muted', text: `${r.mode === 'canary' ? `${fmtPercent(r.percent)} of new requests` : 'mirrored live traffic'} · for ${duration(age)}` }),
    h('span', { class: `nbserve-verdict nbserve-verdict-${r.verdict}`, text: verdictText, data: { verdict: r.verdict } })
  );
  const meta = h('div', {
    class: 'nbserve-muted nbserve-rollout-meta',
    text: [
      r.auto_promote ? `auto-promote after ${gates.window ?? '–'} of passing gates` : 'promoted by hand',
      r.sticky_header ? `sticky on ${r.sticky_header}` : '',
      r.started_by ? `started by ${r.started_by}` : ''
    ]
      .filter(Boolean)
      .join(' · ')
  });

  // Gates: limit and the figure it is judged on.
  const shadow = f.shadow ?? null;
  const p99 = r.mode === 'shadow' ? shadow?.p99_ms ?? f.p99_ms : f.p99_ms;
  const errorRate = r.mode === 'shadow' ? shadow?.error_rate ?? f.error_rate : f.error_rate;
  const rows: [string, string, string, boolean | null][] = [];
  const judge = (limit: unknown, value: number | null | undefined): boolean | null =>
    typeof limit === 'number' && typeof value === 'number' ? value > limit : null;
  if (gates.p99_ms !== undefined && gates.p99_ms !== null) {
    rows.push(['p99', `≤ ${fmt(Number(gates.p99_ms))} ms`, p99 === null || p99 === undefined ? '–' : `${fmt(p99)} ms`, judge(gates.p99_ms, p99)]);
  }
  if (gates.error_rate !== undefined && gates.error_rate !== null) {
    rows.push(['error rate', `≤ ${fmtShare(Number(gates.error_rate))}`, fmtShare(errorRate), judge(gates.error_rate, errorRate)]);
  }
  if (gates.drift_share !== undefined && gates.drift_share !== null) {
    rows.push(['drift share', `≤ ${fmtShare(Number(gates.drift_share))}`, fmtShare(f.drift_share), judge(gates.drift_share, f.drift_share)]);
  }
  rows.push(['requests', `≥ ${gates.min_requests ?? '–'} to judge`, String(f.requests ?? 0), null]);
  rows.push(['window', String(gates.window ?? '–'), duration(age), null]);
  const table = h('table', { class: 'nbserve-gates' });
  table.appendChild(h('thead', {}, h('tr', {}, h('th', { text: 'gate' }), h('th', { text: 'limit' }), h('th', { text: 'so far' }))));
  const body = h('tbody');
  for (const [gate, limit, value, breached] of rows) {
    body.appendChild(
      h(
        'tr',
        { class: breached ? 'nbserve-gate-breached' : breached === false ? 'nbserve-gate-ok' : '', data: { gate } },
        h('td', { text: gate }),
        h('td', { text: limit }),
        h('td', { text: value + (breached ? ' ✗' : breached === false ? ' ✓' : '') })
      )
    );
  }
  table.appendChild(body);

  const figures = h(
    'div',
    { class: 'nbserve-metrics nbserve-rollout-figures' },
    h('span', { class: 'nbserve-metric', title: `v${r.version}'s median and 99th percentile latency since the rollout started` }, `p50 ${fmt(f.p50_ms ?? null)} · p99 ${fmt(f.p99_ms ?? null)} ms`),
    h('span', { class: 'nbserve-metric', text: `${f.requests ?? 0} requests` }),
    h('span', { class: 'nbserve-metric', text: `${fmtShare(f.error_rate)} errors` })
  );
  const parts: (HTMLElement | null)[] = [head, meta, table, figures];
  if (shadow) {
    parts.push(
      h(
        'div',
        { class: 'nbserve-metrics nbserve-shadow-figures' },
        h('span', { class: 'nbserve-metric', text: `${shadow.compared} compared` }),
        h('span', { class: `nbserve-metric${shadow.differing ? ' nbserve-errors' : ''}`, text: `${shadow.differing} differ (${fmtShare(shadow.difference_rate)})` }),
        h('span', { class: `nbserve-metric${shadow.errors ? ' nbserve-errors' : ''}`, text: `${shadow.errors} shadow errors` }),
        shadow.last_error ? h('span', { class: 'nbserve-metric nbserve-errors', text: shadow.last_error, title: 'last shadow error' }) : null
      )
    );
  }
  if (r.reasons && r.reasons.length > 0) {
    parts.push(h('ul', { class: 'nbserve-rollout-reasons' }, ...r.reasons.map(reason => h('li', { text: reason }))));
  }

  const bar = h(
    'div',
    { class: 'nbserve-rollout-actions' },
    button('Promote', () => void commands.execute('nbserve:promote', { name }), 'nbserve-promote', `Make v${r.version} live`),
    button('Abort', () => void commands.execute('nbserve:abort-rollout', { name }), 'nbserve-abort', `Take v${r.version} out of the traffic; v${detail.version ?? '–'} keeps serving`)
  );
  parts.push(bar);
  if (r.mode === 'canary') {
    const shares = h('div', { class: 'nbserve-canary-shares' }, h('span', { class: 'nbserve-muted', text: 'share:' }));
    for (const preset of CANARY_PRESETS) {
      const b = button(`${preset}%`, () => void commands.execute('nbserve:set-canary', { name, percent: preset }), 'nbserve-canary-preset', `Send ${preset}% of new requests to v${r.version}`);
      b.dataset.percent = String(preset);
      if (r.percent !== null && Math.abs(r.percent - preset) < 1e-9) {
        b.classList.add('nbserve-current');
        b.disabled = true;
      }
      shares.appendChild(b);
    }
    shares.appendChild(button('Other…', () => void commands.execute('nbserve:set-canary', { name }), 'nbserve-canary-other', 'Type a share'));
    parts.push(shares);
  }
  const box = section('Rollout', ...parts.filter((p): p is HTMLElement => p !== null));
  box.classList.add(`nbserve-rollout-section`, `nbserve-rollout-${r.mode}-section`);
  box.dataset.mode = r.mode;
  box.dataset.verdict = r.verdict;
  return box;
}

function fmtShare(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '–';
  }
  return `${fmt(value * 100)}%`;
}

function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '–';
  }
  if (seconds < 90) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${fmt(seconds / 3600)} h`;
}
