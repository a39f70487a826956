/**
 * The detail's "Recent events" section: the newest twenty, marked by how serious the agent says
 * each is; a failed version's event opens its log.
 */
import type { EventOut } from './agentTypes';
import { ago, h, section } from './dom';

/** `showLog(version)`: what a click on an error event naming a version does. */
export function eventsSection(events: EventOut[], showLog: (version: number) => void): HTMLElement {
  if (events.length === 0) {
    return section('Recent events', h('div', { class: 'nbserve-muted', text: 'none' }));
  }
  const recent = [...events].sort((a, b) => (b.ts < a.ts ? -1 : b.ts > a.ts ? 1 : 0)).slice(0, 20);
  const list = h('ul', { class: 'nbserve-events' });
  for (const event of recent) {
    // The agent says how serious each event is (nbserve/_events.py): one spelling, not a copy here.
    const bad = event.severity === 'error';
    const warn = event.severity === 'warning';
    const version = event.version;
    const item = list.appendChild(
      h(
        'li',
        { class: `nbserve-event${bad ? ' nbserve-event-error' : warn ? ' nbserve-event-warn' : ''}`, data: { kind: event.kind } },
        ago(event.ts),
        h('span', { class: 'nbserve-event-kind', text: event.kind }),
        event.version !== null && event.version !== undefined ? h('span', { class: 'nbserve-version-tag', text: `v${event.version}` }) : null,
        h('span', { class: 'nbserve-event-message', text: event.message ?? '', title: event.actor ? `by ${event.actor}` : '' })
      )
    );
    if (bad && version !== null && version !== undefined) {
      item.classList.add('nbserve-clickable');
      item.title = `Show the log of v${version}`;
      item.addEventListener('click', () => showLog(version));
    }
  }
  return section('Recent events', list);
}
