/**
 * The detail's "Traffic and drift" section: latency and request charts over the last hour, and
 * drift per feature against its threshold (or why there is none yet).
 */
import type { IDriftFeature, IMetrics, NbserveApiError } from './api';
import { barChart, fmt, lineChart } from './charts';
import { h, section } from './dom';

/** `width`: the charts' width in pixels, the panel's (the sidebar is narrow and resizable). */
export function trafficSection(m: IMetrics | null, error: NbserveApiError | null, width: number): HTMLElement {
  if (!m) {
    const why = error ? error.text : 'loading…';
    return section('Traffic and drift', h('div', { class: 'nbserve-muted', text: why }));
  }
  const times = m.latency.map(p => new Date(p.time * 1000).toISOString());
  const chart = h('div', { class: 'nbserve-chart-box' });
  chart.appendChild(lineChart(`latency (last ${m.window})`, times, [
    { label: 'p50', values: m.latency.map(p => p.p50_ms) },
    { label: 'p99', values: m.latency.map(p => p.p99_ms) }
  ], ' ms', width));
  chart.appendChild(lineChart('requests/s and errors', times, [
    { label: 'req/s', values: m.latency.map(p => p.rps) },
    { label: 'err/min', values: m.latency.map(p => p.errors) }
  ], '', width));
  const parts: HTMLElement[] = [chart];
  const protocols = Object.entries(m.summary?.protocols ?? {});
  if (protocols.some(([name]) => name !== 'bentoml')) {
    // only once a client speaks another wire format than BentoML's own (V2, MLflow, OpenAI)
    const said = protocols.sort((a, b) => b[1] - a[1]).map(([name, n]) => `${name} ${n}`).join(' · ');
    parts.push(h('div', { class: 'nbserve-muted nbserve-protocols', text: `requests by protocol (since the agent started): ${said}` }));
  }
  if (m.drift.features.length === 0) {
    const why = m.drift.unavailable?.message ?? 'not enough traffic yet';
    parts.push(h('div', { class: 'nbserve-muted nbserve-drift-unavailable', text: `drift: ${why}` }));
  } else {
    const d = m.drift;
    const verdict = d.dataset_drift === null ? 'drift: –' : d.dataset_drift ? `drift detected (${fmt((d.drift_share ?? 0) * 100)}% of features)` : 'no dataset drift';
    parts.push(
      h('div', { class: `nbserve-drift-verdict${d.dataset_drift ? ' nbserve-drift-yes' : ''}`, text: verdict }),
      h(
        'div',
        { class: 'nbserve-chart-box' },
        barChart(
          'drift per feature (line: threshold)',
          d.features.map(f => ({
            label: f.feature,
            severity: severity(f),
            flagged: f.drifted,
            note: `${f.method} ${fmt(f.score)}`
          })),
          width
        )
      )
    );
  }
  return section('Traffic and drift', ...parts);
}

/** P-values drift below their threshold, distances above theirs: 1 is the threshold either way. */
const PVALUE_METHODS = ['ks', 'chisquare', 'z'];

function severity(f: IDriftFeature): number | null {
  if (f.score === null || f.threshold === null || !isFinite(f.score) || !isFinite(f.threshold)) {
    return null;
  }
  if (PVALUE_METHODS.includes(f.method)) {
    return f.threshold / Math.max(f.score, 1e-300);
  }
  return f.score / Math.max(f.threshold, 1e-300);
}
