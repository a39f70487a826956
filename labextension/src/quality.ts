/**
 * Model quality from real outcomes, as the summary carries it: the live version's headline
 * metric (accuracy or rmse) in its newest hour with labels and the hour before. Worded as
 * `nbserve._dashboard.quality_text` words it, compactly for the list and in full for the detail.
 */
import type { QualityFlag } from './agentTypes';
import { h } from './dom';

/** Metrics where lower is better. */
const LOWER_IS_BETTER = ['mae', 'rmse'];

/** Short names for the list's badge. */
const SHORT: Record<string, string> = { accuracy: 'acc' };

export interface IQualityTrend {
  /** "↑" or "↓"; "" without a previous hour or when it did not move. */
  arrow: string;
  /** How far it moved, absolute; null without a trend. */
  delta: number | null;
  /** null without a trend. */
  worse: boolean | null;
}

export function hasQuality(q: QualityFlag | null | undefined): q is QualityFlag & { metric: string; value: number } {
  return !!q && !!q.metric && typeof q.value === 'number' && isFinite(q.value);
}

export function qualityTrend(q: QualityFlag): IQualityTrend {
  const { value, previous, metric } = q;
  if (value === null || previous === null || previous === undefined || !isFinite(previous) || Math.abs(value - previous) <= 1e-9) {
    return { arrow: '', delta: null, worse: null };
  }
  const better = value > previous !== LOWER_IS_BETTER.includes(metric ?? '');
  return { arrow: value > previous ? '↑' : '↓', delta: Math.abs(value - previous), worse: !better };
}

/** Python's `{:.Ng}`: N significant digits, no trailing zeros. */
export function fmtG(value: number, digits = 3): string {
  if (!isFinite(value)) {
    return String(value);
  }
  if (value === 0) {
    return '0';
  }
  const exponent = Math.floor(Math.log10(Math.abs(value)));
  if (exponent < -4 || exponent >= digits) {
    const [mantissa, exp] = value.toExponential(digits - 1).split('e');
    const sign = exp.startsWith('-') ? '-' : '+';
    const power = exp.replace(/^[+-]/, '').padStart(2, '0');
    return `${mantissa.includes('.') ? mantissa.replace(/0+$/, '').replace(/\.$/, '') : mantissa}e${sign}${power}`;
  }
  return String(Number(value.toPrecision(digits)));
}

/** "accuracy 0.87 ↓0.04 (worse) (120 labelled)", or "quality: no labels yet". */
export function qualityText(q: QualityFlag | null | undefined): string {
  if (!hasQuality(q)) {
    return 'quality: no labels yet';
  }
  const trend = qualityTrend(q);
  let text = `${q.metric} ${fmtG(q.value)}`;
  if (trend.delta !== null) {
    text += ` ${trend.arrow}${fmtG(trend.delta, 2)}${trend.worse ? ' (worse)' : ''}`;
  }
  return `${text} (${q.labelled ?? 0} labelled)`;
}

const WHERE = 'from real outcomes sent with dep.feedback(ids, y_true), live version, newest hour with labels';

/** The list's badge: "acc 0.87 ↓" (the arrow in the warning colour when worse); muted without labels. */
export function qualityBadge(q: QualityFlag | null | undefined): HTMLElement {
  if (!hasQuality(q)) {
    return h('span', {
      class: 'nbserve-quality nbserve-quality-none',
      text: 'quality –',
      title: `${qualityText(q)}: send real outcomes with dep.feedback(ids, y_true)`,
      data: { metric: '' }
    });
  }
  const trend = qualityTrend(q);
  const state = trend.worse === null ? 'flat' : trend.worse ? 'worse' : 'better';
  return h(
    'span',
    {
      class: `nbserve-quality nbserve-quality-${state}`,
      title: `${qualityText(q)}\n${WHERE}`,
      data: { metric: q.metric, value: String(q.value) }
    },
    `${SHORT[q.metric] ?? q.metric} ${fmtG(q.value, 2)}`,
    trend.arrow ? h('span', { class: 'nbserve-quality-arrow', text: ` ${trend.arrow}` }) : null
  );
}

/** The detail's "Quality" line: metric, value, trend (warning colour when worse), labelled count. */
export function qualityLine(q: QualityFlag | null | undefined): HTMLElement {
  const label = h('span', { class: 'nbserve-quality-label', text: 'Quality' });
  if (!hasQuality(q)) {
    return h(
      'div',
      { class: 'nbserve-quality-line nbserve-quality-none', data: { metric: '' } },
      label,
      h('span', { class: 'nbserve-muted', text: 'no labels yet: send real outcomes with dep.feedback(ids, y_true)' })
    );
  }
  const trend = qualityTrend(q);
  const state = trend.worse === null ? 'flat' : trend.worse ? 'worse' : 'better';
  const previous =
    q.previous !== null && q.previous !== undefined ? `the hour before: ${fmtG(q.previous)}` : 'no earlier hour with labels yet';
  return h(
    'div',
    {
      class: `nbserve-quality-line nbserve-quality-${state}`,
      title: `${qualityText(q)}\n${WHERE}; ${previous}`,
      data: { metric: q.metric, value: String(q.value) }
    },
    label,
    h('span', { class: 'nbserve-quality-metric', text: q.metric }),
    h('span', { class: 'nbserve-quality-value', text: fmtG(q.value) }),
    trend.arrow
      ? h('span', {
          class: 'nbserve-quality-trend',
          text: `${trend.arrow}${fmtG(trend.delta ?? 0, 2)}${trend.worse ? ' worse' : ''}`,
          title: `${trend.worse ? 'worse' : 'better'} than the hour before (${fmtG(q.previous ?? 0)})`
        })
      : null,
    h('span', { class: 'nbserve-muted', text: `${q.labelled ?? 0} labelled` })
  );
}
