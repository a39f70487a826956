/**
 * JupyterLab notifications for what happened to a deployment while the panel was open:
 * a canary or shadow rolled back by its gates, a promotion, a failed deploy, a batching
 * budget too short for a full batch or refusing requests, a server over its memory cap.
 * The model emits each new event once; this module words it.
 */
import { Notification } from '@jupyterlab/apputils';

import type { EventKind, EventOut } from './agentTypes';

/** The event kinds that deserve a notification. */
export const NOTIFIED_KINDS: EventKind[] = ['gate_breached', 'promoted', 'deploy_failed', 'batching_warning', 'batch_overloaded', 'memory_exceeded', 'start_interrupted'];

/** The agent words these itself (what happened and what to change); this is only for an event without a message. */
const AGENT_WORDED: Partial<Record<EventKind, string>> = {
  batching_warning: 'the latency budget cannot hold a full batch',
  batch_overloaded: 'requests waited past the batching latency budget and were answered 503',
  memory_exceeded: 'a server went over its memory cap and is restarted',
  start_interrupted: 'the agent stopped while the version was starting; it failed and the live version serves'
};

function data(event: EventOut): Record<string, any> {
  const value = event.data;
  return value && typeof value === 'object' ? (value as Record<string, any>) : {};
}

function clip(text: string, max = 300): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The notification's text, or null when the event is not notified. */
export function eventMessage(name: string, event: EventOut): { type: 'warning' | 'success'; text: string } | null {
  const d = data(event);
  const version = event.version !== null && event.version !== undefined ? `v${event.version}` : 'the new version';
  const kind = event.kind as EventKind; // a kind misspelt below does not compile (another agent's: default)
  switch (kind) {
    case 'gate_breached': {
      const mode = typeof d.mode === 'string' ? d.mode : 'rollout';
      const reason = typeof d.reason === 'string' && d.reason ? d.reason : event.message ?? '';
      return { type: 'warning', text: clip(`${name}: ${version} ${mode} rolled back by its gates: ${reason}`) };
    }
    case 'promoted': {
      const by = event.actor === 'nbserve-gates' ? ' by its gates' : event.actor ? ` by ${event.actor}` : '';
      const reason = typeof d.reason === 'string' && d.reason && d.reason !== 'promoted' ? ` (${d.reason})` : '';
      return { type: 'success', text: clip(`${name}: ${version} promoted${by}${reason}, it is live`) };
    }
    case 'deploy_failed':
      return { type: 'warning', text: clip(`${name}: ${event.message ?? `${version} did not go live`}`) };
    case 'batching_warning':
    case 'batch_overloaded':
    case 'memory_exceeded':
    case 'start_interrupted':
      // the message names the version and the knob to change; the fallback only says what happened
      return { type: 'warning', text: clip(`${name}: ${event.message || `${version}: ${AGENT_WORDED[kind]}`}`) };
    default:
      return null;
  }
}

/** Notify one event; `open` shows the deployment in the panel. */
export function notifyEvent(name: string, event: EventOut, open: () => void): void {
  const message = eventMessage(name, event);
  if (!message) {
    return;
  }
  const options = {
    autoClose: message.type === 'success' ? 8000 : 20000,
    actions: [{ label: 'Show', callback: open }],
    data: { nbserve: { name, kind: event.kind, id: event.id ?? null } }
  };
  if (message.type === 'success') {
    Notification.success(message.text, options);
  } else {
    Notification.warning(message.text, options);
  }
}
