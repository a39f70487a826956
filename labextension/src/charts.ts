/**
 * Small SVG charts drawn from the server's JSON. Colours come from CSS classes that use
 * JupyterLab's theme variables (style/index.css), so they follow light and dark themes.
 */
const NS = 'http://www.w3.org/2000/svg';

function svg(width: number, height: number, cls: string): SVGSVGElement {
  const el = document.createElementNS(NS, 'svg');
  el.setAttribute('width', String(width));
  el.setAttribute('height', String(height));
  el.setAttribute('viewBox', `0 0 ${width} ${height}`);
  el.setAttribute('class', cls);
  return el;
}

function node<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  parent?: Element
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    el.setAttribute(key, String(value));
  }
  parent?.appendChild(el);
  return el;
}

function text(parent: Element, x: number, y: number, value: string, anchor = 'start'): void {
  const el = node('text', { x, y, 'text-anchor': anchor, class: 'nbserve-chart-label' }, parent);
  el.textContent = value;
}

/** The path through the non-null points of a series, scaled into the box. */
function path(values: (number | null)[], x0: number, y0: number, w: number, h: number, max: number): string {
  const n = values.length;
  const step = n > 1 ? w / (n - 1) : 0;
  let d = '';
  let pen = false;
  values.forEach((value, i) => {
    if (value === null || value === undefined || !isFinite(value)) {
      pen = false;
      return;
    }
    const x = x0 + (n > 1 ? i * step : w / 2);
    const y = y0 + h - (max > 0 ? (value / max) * h : 0);
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)} `;
    pen = true;
  });
  return d.trim();
}

/** A request-rate sparkline (oldest first). */
export function sparkline(values: number[], width = 72, height = 18): SVGSVGElement {
  const el = svg(width, height, 'nbserve-sparkline');
  const title = node('title', {}, el);
  const last = values.length ? values[values.length - 1] : 0;
  title.textContent = `requests/s per minute, last ${values.length} min (now ${fmt(last)})`;
  node('line', { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: 'nbserve-chart-axis' }, el);
  if (values.length === 0) {
    return el;
  }
  const max = Math.max(...values, 0);
  const d = path(values, 1, 1, width - 2, height - 3, max);
  if (d) {
    node('path', { d, class: 'nbserve-chart-line nbserve-series-0' }, el);
  }
  return el;
}

export interface ISeries {
  label: string;
  values: (number | null)[];
}

/** A line chart over time: several series sharing a y axis, with a small legend. */
export function lineChart(
  title: string,
  times: string[],
  series: ISeries[],
  unit: string,
  width = 300,
  height = 120
): SVGSVGElement {
  const el = svg(width, height, 'nbserve-chart');
  const left = 40;
  const top = 16;
  const bottom = 16;
  const w = width - left - 6;
  const h = height - top - bottom;
  text(el, 0, 11, title);
  const all = series.flatMap(s => s.values).filter((v): v is number => v !== null && isFinite(v));
  const max = all.length ? niceMax(Math.max(...all)) : 1;
  node('line', { x1: left, y1: top + h, x2: left + w, y2: top + h, class: 'nbserve-chart-axis' }, el);
  node('line', { x1: left, y1: top, x2: left, y2: top + h, class: 'nbserve-chart-axis' }, el);
  node('line', { x1: left, y1: top, x2: left + w, y2: top, class: 'nbserve-chart-grid' }, el);
  text(el, left - 4, top + 4, `${fmt(max)}${unit}`, 'end');
  text(el, left - 4, top + h, `0`, 'end');
  if (times.length) {
    text(el, left, height - 3, clock(times[0]));
    text(el, left + w, height - 3, clock(times[times.length - 1]), 'end');
  }
  series.forEach((s, i) => {
    const d = path(s.values, left, top, w, h, max);
    if (d) {
      node('path', { d, class: `nbserve-chart-line nbserve-series-${i}` }, el);
    }
    if (s.values.length <= 90) {
      // points as dots too: a single minute of traffic is a dot, not an invisible line
      const n = s.values.length;
      s.values.forEach((value, j) => {
        if (value === null || value === undefined || !isFinite(value)) {
          return;
        }
        const cx = left + (n > 1 ? (j * w) / (n - 1) : w / 2);
        const cy = top + h - (max > 0 ? (value / max) * h : 0);
        node('circle', { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 1.8, class: `nbserve-series-fill-${i}` }, el);
      });
    }
    const lx = width - 6 - (series.length - i) * 44;
    node('rect', { x: lx, y: 4, width: 8, height: 3, class: `nbserve-series-fill-${i}` }, el);
    text(el, lx + 11, 11, s.label);
  });
  if (!all.length) {
    text(el, left + w / 2, top + h / 2, 'no traffic yet', 'middle');
  }
  return el;
}

export interface IBar {
  label: string;
  /** How far past its threshold: 1 is the threshold, above 1 drifted. */
  severity: number | null;
  flagged: boolean | null;
  note: string;
}

/** Horizontal bars (drift severity per feature), the threshold as a line at 1. */
export function barChart(title: string, bars: IBar[], width = 300): SVGSVGElement {
  const row = 16;
  const height = 18 + bars.length * row;
  const el = svg(width, height, 'nbserve-chart');
  const left = Math.min(100, width * 0.32);
  const w = width - left - 64;
  text(el, 0, 11, title);
  const CAP = 4;
  const values = bars.map(b => b.severity).filter((v): v is number => v !== null && isFinite(v));
  const max = Math.max(1.5, Math.min(CAP, Math.max(0, ...values)) * 1.05);
  const tx = left + w / max;
  bars.forEach((bar, i) => {
    const y = 18 + i * row;
    text(el, left - 4, y + 10, bar.label.length > 16 ? bar.label.slice(0, 15) + '…' : bar.label, 'end');
    const value = Math.min(CAP, bar.severity ?? 0);
    const cls = bar.flagged ? 'nbserve-bar nbserve-bar-flagged' : 'nbserve-bar';
    node('rect', { x: left, y: y + 2, width: Math.max(1, (value / max) * w), height: row - 5, class: cls }, el);
    text(el, left + w + 4, y + 10, bar.note);
  });
  node('line', { x1: tx, y1: 14, x2: tx, y2: height, class: 'nbserve-chart-threshold' }, el);
  return el;
}

function niceMax(value: number): number {
  if (value <= 0) {
    return 1;
  }
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (value <= m * power) {
      return m * power;
    }
  }
  return 10 * power;
}

/** A number in at most 3 significant digits. */
export function fmt(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '–';
  }
  if (value === 0) {
    return '0';
  }
  const abs = Math.abs(value);
  if (abs >= 100) {
    return value.toFixed(0);
  }
  if (abs >= 10) {
    return value.toFixed(1);
  }
  if (abs >= 0.01) {
    return value.toFixed(2);
  }
  return value.toExponential(1);
}

function clock(iso: string): string {
  const date = new Date(iso);
  return isNaN(date.getTime()) ? iso : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
