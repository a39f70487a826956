/**
 * A deployment's resources as `nbserve top` shows them, in one line for the detail view:
 * warm or cold, workers × servers, CPU %, RSS, the caps and how they are enforced, batching,
 * idle time. And the Scale… dialog's form (workers, memory, CPU, batching, idle timeout).
 */
import { Widget } from '@lumino/widgets';

import type { BatchingOut, ReplicaOut, ResourceRow } from './agentTypes';
import { IScaleChanges } from './api';
import { fmt } from './charts';
import { COLD_TOOLTIP, h } from './dom';

/** How each enforcement holds the caps (docs/scaling.md). */
const ENFORCEMENT: Record<string, string> = {
  'cgroup-v2': "enforced by the kernel: memory.max and cpu.max of the server's cgroup (v2)",
  'cgroup-v1': "enforced by the kernel: memory.limit_in_bytes and the CFS quota of the server's cgroups (v1)",
  watchdog: 'no writable cgroups: the agent checks the servers’ RSS every second and pins them to ceil(cpus) CPUs'
};

const STATE_TITLES: Record<string, string> = {
  warm: 'its servers are running',
  cold: COLD_TOOLTIP,
  stopped: 'stopped: nothing serves until it is started',
  starting: 'its server is starting'
};

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** "212 MiB", or "1.5 GiB" from 1 GiB up. */
export function fmtBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '–';
  }
  return bytes >= GiB ? `${Number((bytes / GiB).toFixed(2))} GiB` : `${Math.round(bytes / MiB)} MiB`;
}

/** "12 s", "4 min", "2.5 h". */
export function fmtSeconds(seconds: number): string {
  if (seconds < 90) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min`;
  }
  return `${fmt(seconds / 3600)} h`;
}

/** "20 ms", "1.5 s", "60 s", "10 min": a latency budget. */
export function fmtMs(ms: number): string {
  if (!isFinite(ms)) {
    return '–';
  }
  if (ms < 1000) {
    return `${Number(ms.toFixed(1))} ms`;
  }
  const seconds = ms / 1000;
  return seconds < 90 ? `${Number(seconds.toFixed(1))} s` : fmtSeconds(seconds);
}

/** The agent's knobs when batching is turned on without them (BentoML's defaults). */
export const BATCHING_DEFAULTS: BatchingOut = { max_batch_size: 100, max_latency_ms: 60000 };

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The caps and how they are enforced: "cap 1 GiB · 1.5 CPU (watchdog)", or "no caps". */
function capsFact(r: ResourceRow): HTMLElement {
  const caps = [r.memory_cap !== null && r.memory_cap !== undefined ? fmtBytes(r.memory_cap) : '', r.cpus_cap ? `${fmt(r.cpus_cap)} CPU` : '']
    .filter(Boolean)
    .join(' · ');
  if (!caps) {
    return h('span', { class: 'nbserve-res-fact nbserve-res-caps nbserve-res-none', text: 'no caps', title: 'no memory or CPU cap (Scale… sets them)', data: { fact: 'caps' } });
  }
  const how = r.enforcement ?? 'not enforced';
  return h('span', {
    class: 'nbserve-res-fact nbserve-res-caps',
    text: `cap ${caps} (${how})`,
    title: ENFORCEMENT[how] ?? `enforcement: ${how}`,
    data: { fact: 'caps', enforcement: r.enforcement ?? '' }
  });
}

/** "batching ≤100 rows / 60 s", or "no batching"; nothing from an agent older than batching. */
function batchingFact(r: ResourceRow): HTMLElement | null {
  if (r.batching === undefined) {
    return null;
  }
  if (r.batching === null) {
    return h('span', {
      class: 'nbserve-res-fact nbserve-res-batching nbserve-res-none',
      text: 'no batching',
      title: 'each request is its own model call (Scale… turns on adaptive batching)',
      data: { fact: 'batching' }
    });
  }
  const { max_batch_size: rows, max_latency_ms: ms } = r.batching;
  return h('span', {
    class: 'nbserve-res-fact nbserve-res-batching',
    text: `batching ≤${plural(rows, 'row')} / ${fmtMs(ms)}`,
    title:
      'adaptive batching: concurrent requests are validated one by one, then merged into one model call ' +
      `of at most ${plural(rows, 'row')}; a request still waiting after ${fmtMs(ms)} is answered 503`,
    data: { fact: 'batching' }
  });
}

function idleFact(r: ResourceRow): HTMLElement {
  const timeout = r.idle_timeout ? `scales to zero after ${r.idle_timeout} without requests` : 'never scales to zero (no idle timeout)';
  let text: string;
  if (r.state === 'cold') {
    text = r.held > 0 ? `${plural(r.held, 'request')} held while it starts` : `cold after ${r.idle_timeout ?? 'idling'}`;
  } else if (r.idle_seconds === null || r.idle_seconds === undefined) {
    text = 'no requests yet';
  } else {
    text = `idle ${fmtSeconds(r.idle_seconds)}`;
  }
  if (r.state !== 'cold' && r.idle_timeout) {
    text += ` / ${r.idle_timeout}`;
  }
  return h('span', {
    class: `nbserve-res-fact nbserve-res-idle${r.held > 0 ? ' nbserve-res-held' : ''}`,
    text,
    title: `time since the last request through the stable URL; ${timeout}`,
    data: { fact: 'idle' }
  });
}

/** "own environment" when a server runs from one of NBSERVE_HOME/envs; nothing in the agent's own. */
function environmentFact(r: ResourceRow): HTMLElement | null {
  const own = (r.environments ?? []).filter(key => key !== 'agent');
  if (own.length === 0) {
    return null;
  }
  return h('span', {
    class: 'nbserve-res-fact nbserve-res-env',
    text: own.length === 1 ? `env ${own[0].slice(0, 8)}` : `${own.length} envs`,
    title:
      'a version runs from an environment of its own (its pinned packages differ from the agent\'s): ' +
      `${own.join(', ')}; see \`nbserve envs list\``,
    data: { fact: 'environment' }
  });
}

/** Where its versions run, on an engine other than the local one: Ray, or a shared model server. */
function engineFact(r: ResourceRow): HTMLElement | null {
  if (r.engine?.includes('ray')) {
    return rayFact(r);
  }
  return r.engine?.includes('shared') ? sharedFact(r) : null;
}

/**
 * In a shared model server: "shared · 1 of 1 loaded", and per version in the tooltip whether its
 * model is loaded, the memory it added to the server, its requests, loads and evictions.
 */
function sharedFact(r: ResourceRow): HTMLElement {
  const models = r.models ?? [];
  const loaded = models.filter(m => m.loaded);
  const each = models.map(m =>
    `v${m.version} in ${m.server}: ` +
    (m.loaded ? `loaded, ${fmtBytes(m.memory_bytes ?? 0)}, ${plural(m.requests ?? 0, 'request')} since its load` : 'not loaded (its next request loads it)') +
    `; loaded ${m.loads ?? 0}×, evicted ${m.evictions ?? 0}×`
  );
  return h('span', {
    class: 'nbserve-res-fact nbserve-res-engine',
    text: `${r.engine} · ${loaded.length} of ${models.length} loaded`,
    title:
      'its versions run in a shared model server with other models (one process, memory and GIL); ' +
      'the least recently used idle model is unloaded when the server is full' + (each.length ? `\n${each.join('\n')}` : ''),
    data: { fact: 'engine', engine: r.engine ?? '' }
  });
}

/**
 * Where its versions run when Ray serves one: "ray · 2 replicas on 2 nodes", "autoscaled 0–4",
 * each replica's version, state, node and process in the tooltip.
 */
function rayFact(r: ResourceRow): HTMLElement {
  const replicas = r.replicas ?? [];
  const alive = replicas.filter(x => x.state === 'ALIVE');
  const nodes = new Set(alive.map(x => x.node));
  let text = `${r.engine} · ${plural(alive.length, 'replica')} on ${plural(nodes.size, 'node')}`;
  if (r.autoscaling) {
    text += ` · autoscaled ${r.autoscaling.min}–${r.autoscaling.max}`;
  }
  const usage = (x: ReplicaOut): string =>
    x.rss_bytes === null || x.rss_bytes === undefined ? '' : `, ${fmtBytes(x.rss_bytes)}, CPU ${fmt(x.cpu_percent ?? 0)}%`;
  const each = replicas.map(x => `v${x.version} ${x.state} on node ${(x.node ?? '?').slice(0, 12)} (pid ${x.pid ?? '?'}${usage(x)})`);
  const bounds = r.autoscaling
    ? `Ray Serve's autoscaler keeps ${r.autoscaling.min} to ${r.autoscaling.max} replicas, aiming at ` +
      `${r.autoscaling.target_ongoing_requests} requests in flight each; one goes after ${r.autoscaling.downscale_delay} of low load`
    : 'a fixed count of replicas (Scale… changes it)';
  return h('span', {
    class: 'nbserve-res-fact nbserve-res-engine',
    text,
    title: `Ray Serve runs these versions on its cluster; ${bounds}` + (each.length ? `\n${each.join('\n')}` : ''),
    data: { fact: 'engine', engine: r.engine ?? '' }
  });
}

/** The facts of the Resources line (the detail view keeps its Scale… button beside them). */
export function resourceFacts(r: ResourceRow | null | undefined): HTMLElement {
  if (!r) {
    return h('span', { class: 'nbserve-res-facts nbserve-muted', text: 'not available from the agent' });
  }
  return h(
    'span',
    { class: 'nbserve-res-facts' },
    h('span', { class: `nbserve-res-state nbserve-res-state-${r.state}`, text: r.state, title: STATE_TITLES[r.state] ?? r.state, data: { fact: 'state' } }),
    h('span', {
      class: 'nbserve-res-fact nbserve-res-workers',
      text: `${plural(r.workers, 'worker')} × ${plural(r.servers, 'server')}`,
      title: 'workers per server × servers running (the live version, warm ones, a canary)',
      data: { fact: 'workers' }
    }),
    h('span', { class: 'nbserve-res-fact', text: `CPU ${fmt(r.cpu_percent)}%`, title: 'CPU of every server process together (100% = one core)', data: { fact: 'cpu' } }),
    h('span', { class: 'nbserve-res-fact', text: `RSS ${fmtBytes(r.rss_bytes)}`, title: `resident memory of ${plural(r.processes, 'process')}`, data: { fact: 'rss' } }),
    capsFact(r),
    batchingFact(r),
    environmentFact(r),
    engineFact(r),
    idleFact(r)
  );
}

/**
 * The Scale… dialog's body: empty fields stay as they are; "none" removes a cap or the timeout.
 * Batching's checkbox and knobs start at the deployment's own (the defaults when it is off).
 * Out-of-range numbers are `:invalid`, which keeps the dialog's accept button disabled.
 */
export class ScaleForm extends Widget {
  constructor(current: ResourceRow | null | undefined) {
    super();
    this.addClass('nbserve-ScaleForm');
    const row = (label: string, input: HTMLInputElement, now: string, hint: string): HTMLElement => {
      input.classList.add('jp-mod-styled', 'nbserve-scale-input');
      input.placeholder = now;
      const id = `nbserve-scale-${input.name}-${++ScaleForm._ids}`;
      input.id = id;
      const labelEl = h('label', { text: label });
      labelEl.htmlFor = id;
      return h('div', { class: 'nbserve-scale-row' }, labelEl, input, h('span', { class: 'nbserve-muted nbserve-scale-hint', text: hint }));
    };
    this.workers = field('workers', 'number');
    this.workers.min = '1';
    this.workers.step = '1';
    this.memory = field('memory');
    this.cpus = field('cpus');
    this.idle = field('idle_timeout');
    const r = current ?? null;
    this._batching = r?.batching ?? null;
    const knobs = this._batching ?? BATCHING_DEFAULTS;
    this.batching = field('batching', 'checkbox');
    this.batching.checked = this._batching !== null;
    this.batchSize = numberField('max_batch_size', 1, 100000, knobs.max_batch_size);
    this.batchLatency = numberField('max_latency_ms', 1, 600000, knobs.max_latency_ms);
    const batchingId = `nbserve-scale-batching-${++ScaleForm._ids}`;
    this.batching.id = batchingId;
    const batchingLabel = h('label', { text: 'Batching' });
    batchingLabel.htmlFor = batchingId;
    const sync = (): void => {
      this.batchSize.disabled = this.batchLatency.disabled = !this.batching.checked;
    };
    sync();
    this.batching.addEventListener('change', () => {
      sync();
      // the dialog checks its inputs' validity on `input`, in the capture phase: before this
      // handler enabled or disabled the knobs (a disabled input is never invalid); check again
      this.node.dispatchEvent(new Event('input', { bubbles: true }));
    });
    this.node.append(
      h('p', { class: 'nbserve-muted', text: 'Leave a field empty to keep it; "none" removes a cap or the idle timeout.' }),
      row('Workers', this.workers, r ? String(r.workers) : '', r?.engine?.includes('ray') ? 'replicas on Ray' : 'per server'),
      row('Memory cap', this.memory, r ? (r.memory_cap ? fmtBytes(r.memory_cap) : 'none') : '', 'e.g. 1G, 512M'),
      row('CPU cap', this.cpus, r ? (r.cpus_cap ? String(r.cpus_cap) : 'none') : '', 'cores, e.g. 1.5'),
      row('Idle timeout', this.idle, r ? r.idle_timeout ?? 'none' : '', 'e.g. 15m: scale to zero'),
      h(
        'div',
        {
          class: 'nbserve-scale-row nbserve-scale-batching',
          title: 'adaptive batching: concurrent requests are validated one by one, then merged into one model call'
        },
        batchingLabel,
        h('span', {}, this.batching),
        h('span', { class: 'nbserve-muted nbserve-scale-hint', text: 'merge concurrent requests' })
      ),
      row('Max batch size', this.batchSize, String(knobs.max_batch_size), 'rows, 1–100000'),
      row('Max latency', this.batchLatency, String(knobs.max_latency_ms), 'ms, 1–600000: past it, a 503')
    );
  }

  /** What to change (only the fields filled in). */
  getValue(): IScaleChanges {
    const changes: IScaleChanges = {};
    const workers = this.workers.value.trim();
    if (workers) {
      changes.workers = Number(workers);
    }
    const memory = this.memory.value.trim();
    if (memory) {
      changes.memory = memory;
    }
    const cpus = this.cpus.value.trim();
    if (cpus) {
      changes.cpus = isFinite(Number(cpus)) ? Number(cpus) : cpus; // "none" stays a word
    }
    const idle = this.idle.value.trim();
    if (idle) {
      changes.idle_timeout = idle;
    }
    const batching = batchingChange(this._batching, this.batching.checked, {
      max_batch_size: knob(this.batchSize),
      max_latency_ms: knob(this.batchLatency)
    });
    if (batching !== null) {
      changes.batching = batching;
    }
    return changes;
  }

  readonly workers: HTMLInputElement;
  readonly memory: HTMLInputElement;
  readonly cpus: HTMLInputElement;
  readonly idle: HTMLInputElement;
  readonly batching: HTMLInputElement;
  readonly batchSize: HTMLInputElement;
  readonly batchLatency: HTMLInputElement;
  /** The deployment's batching when the form opened. */
  private _batching: BatchingOut | null;
  private static _ids = 0;
}

/**
 * What the form's batching asks of `scale`, or null for no change: false turns it off, true
 * turns it on with the defaults, an object names the knobs that differ from what is there
 * (the defaults, when it is off). A knob left empty (null) stays as it is.
 */
export function batchingChange(
  current: BatchingOut | null,
  on: boolean,
  knobs: { max_batch_size: number | null; max_latency_ms: number | null }
): boolean | Partial<BatchingOut> | null {
  if (!on) {
    return current === null ? null : false;
  }
  const base = current ?? BATCHING_DEFAULTS;
  const changed: Partial<BatchingOut> = {};
  for (const key of ['max_batch_size', 'max_latency_ms'] as const) {
    const value = knobs[key];
    if (value !== null && value !== base[key]) {
      changed[key] = value;
    }
  }
  if (Object.keys(changed).length > 0) {
    return changed;
  }
  return current === null ? true : null;
}

/** A knob's whole number, or null when it is empty (or not a number: the dialog blocks that). */
function knob(input: HTMLInputElement): number | null {
  const value = input.value.trim();
  return value && Number.isInteger(Number(value)) ? Number(value) : null;
}

/** A whole number from `min` to `max`; out of range or fractional, the input is `:invalid`. */
function numberField(name: string, min: number, max: number, value: number): HTMLInputElement {
  const input = field(name, 'number');
  input.min = String(min);
  input.max = String(max);
  input.step = '1';
  input.value = String(value);
  return input;
}

function field(name: string, type = 'text'): HTMLInputElement {
  const input = document.createElement('input');
  input.type = type;
  input.name = name;
  input.autocomplete = 'off';
  return input;
}

/** A change that is there: the agent's ScaleRequest also takes null for "unchanged". */
function given<T>(value: T | null | undefined): value is T {
  return value !== null && value !== undefined;
}

/** "workers 2, memory cap 1G, no idle timeout": what a scale changes, in words. */
export function describeScale(changes: IScaleChanges): string {
  const parts: string[] = [];
  if (given(changes.workers)) {
    parts.push(plural(changes.workers, 'worker'));
  }
  if (given(changes.memory)) {
    parts.push(changes.memory === 'none' ? 'no memory cap' : `memory cap ${changes.memory}`);
  }
  if (given(changes.cpus)) {
    parts.push(changes.cpus === 'none' ? 'no CPU cap' : `CPU cap ${changes.cpus}`);
  }
  if (given(changes.idle_timeout)) {
    parts.push(changes.idle_timeout === 'none' ? 'no idle timeout' : `idle timeout ${changes.idle_timeout}`);
  }
  const batching = changes.batching;
  if (batching === false) {
    parts.push('no batching');
  } else if (batching === true) {
    parts.push('batching on');
  } else if (given(batching)) {
    const knobs = [
      given(batching.max_batch_size) ? `≤${plural(batching.max_batch_size, 'row')}` : '',
      given(batching.max_latency_ms) ? `max latency ${fmtMs(batching.max_latency_ms)}` : ''
    ].filter(Boolean);
    parts.push(knobs.length > 0 ? `batching ${knobs.join(' / ')}` : 'batching on');
  }
  return parts.join(', ');
}
