/**
 * The detail's "Versions" section: the aliases, then every version newest first with its own
 * URL, status, who and when, provenance, its model card and Roll back, and its error if it failed.
 */
import type { CommandRegistry } from '@lumino/commands';

import type { IDeploymentDetail, IHistoryRow } from './api';
import { rollbackTargets } from './actions';
import { ago, button, copyButton, h, section } from './dom';

/** Every version, newest first, under the aliases that name some of them. */
export function versionsSection(detail: IDeploymentDetail, commands: CommandRegistry): HTMLElement {
  const targets = new Set(rollbackTargets(detail));
  const list = h('div', { class: 'nbserve-history' });
  for (const row of [...detail.history].sort((a, b) => b.version - a.version)) {
    list.appendChild(versionRow(detail, row, targets.has(row.version), commands));
  }
  return section('Versions', aliasChips(detail), list);
}

/**
 * One version: number (its own URL copyable), status, when and who, its model card;
 * notebook and cell; its error if it failed.
 */
function versionRow(
  detail: IDeploymentDetail,
  row: IHistoryRow,
  canRollBack: boolean,
  commands: CommandRegistry
): HTMLElement {
  const name = detail.name;
  const cellNo = row.cell !== null && row.cell !== undefined ? ` · cell [${row.cell}]` : '';
  const where = row.notebook ? `${basename(row.notebook)}${cellNo}` : 'not from a notebook';
  const provenance = [
    row.notebook,
    row.cell_sha256 ? `cell sha256 ${row.cell_sha256}…` : '',
    row.model ?? '',
    row.bento ?? ''
  ]
    .filter(Boolean)
    .join('\n');
  const action = canRollBack
    ? button(
        'Roll back',
        () => void commands.execute('nbserve:rollback', { name, to: row.version }),
        'nbserve-rollback',
        `Point the stable URL at v${row.version}`
      )
    : null;
  const card = button(
    'Card',
    () => void commands.execute('nbserve:open-model-card', { name, version: row.version }),
    'nbserve-card-version',
    `Model card of v${row.version}`
  );
  const ownUrl = detail.url ? `${detail.url}/v/${row.version}` : null;
  return h(
    'div',
    {
      class: `nbserve-version-row${row.live ? ' nbserve-live' : ''}${row.status === 'canary' || row.status === 'shadow' ? ` nbserve-rollout-row nbserve-${row.status}-row` : ''}`,
      data: { version: String(row.version), status: row.status }
    },
    h(
      'div',
      { class: 'nbserve-version-line' },
      h('span', { class: 'nbserve-version-number', text: `v${row.version}` }),
      ownUrl ? copyButton(ownUrl, 'nbserve-copy-version', `Copy v${row.version}'s own URL: ${ownUrl}`) : null,
      h('span', { class: `nbserve-vstatus nbserve-vstatus-${row.status}`, text: row.status }),
      runtimeBadge(row.runtime),
      h('span', { class: 'nbserve-muted' }, ago(row.created_at), ` · ${row.created_by ?? '–'}`),
      h('span', { class: 'nbserve-version-buttons' }, card, action)
    ),
    h(
      'div',
      { class: 'nbserve-version-meta', title: provenance },
      where,
      row.description ? h('span', { class: 'nbserve-description', text: ` — ${row.description}` }) : null
    ),
    row.error ? h('pre', { class: 'nbserve-version-error', text: row.error }) : null
  );
}

/** Which runtime serves the version: the model itself, or compiled to ONNX (docs/runtimes.md). */
function runtimeBadge(runtime: string | null): HTMLElement {
  const compiled = runtime === 'onnx';
  return h('span', {
    class: `nbserve-runtime nbserve-runtime-${compiled ? 'onnx' : 'native'}`,
    text: compiled ? 'onnx' : 'native',
    title: compiled
      ? 'compiled to ONNX and served by onnxruntime; its answers were checked against the model\'s by parity'
      : 'served by the model itself'
  });
}

/** The named versions above the version list: "staging → v1", each copying its URL. */
function aliasChips(detail: IDeploymentDetail): HTMLElement | null {
  const aliases = Object.entries(detail.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (aliases.length === 0) {
    return null;
  }
  const line = h('div', { class: 'nbserve-aliases' }, h('span', { class: 'nbserve-muted', text: 'aliases:' }));
  for (const [alias, version] of aliases) {
    const url = detail.url ? `${detail.url}/v/${encodeURIComponent(alias)}` : null;
    const chip = h('span', {
      class: 'nbserve-alias-chip',
      text: `${alias} → v${version}`,
      title: url ? `${url}/... calls v${version}` : `calls v${version}`,
      data: { alias, version: String(version) }
    });
    line.appendChild(chip);
    if (url) {
      chip.appendChild(copyButton(url, 'nbserve-copy-alias', `Copy ${url}`));
    }
  }
  return line;
}

function basename(path: string): string {
  return path.split('/').pop() ?? path;
}
