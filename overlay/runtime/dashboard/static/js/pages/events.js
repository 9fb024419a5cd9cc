// The events page: user events gossiped through the colony, live (the node's other
// events too, on request), and a form to send one.

import { ApiError, call, stream } from '../api.js';
import { h } from '../ui.js';

const MAX_ROWS = 500;

export default async function events(main, ctx) {
  const all = h('input', { type: 'checkbox', id: 'all-events' });
  const body = h('tbody', { id: 'event-rows' });
  const name = h('input', { id: 'event-name', placeholder: 'name', value: 'hello' });
  const payload = h('input', { id: 'event-payload', placeholder: 'payload', size: 40 });
  const sent = h('span.muted', { id: 'event-sent' });
  const send = async () => {
    try {
      const r = await call('POST', '/v1/events/send', { body: { name: name.value, payload: payload.value }, signal: ctx.signal });
      sent.textContent = `sent (${r.bytes} bytes)`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      sent.textContent = e.message;
    }
  };
  main.append(h('h2', {}, 'Events'),
    h('div.card', {}, h('div.row', {}, name, payload,
      h('button', { id: 'event-send', type: 'button', onclick: () => send().catch((e) => ctx.fail(e)) }, 'send user event'), sent)),
    h('div.row', {}, h('label', {}, all, ' all node events (not only user events)')),
    h('div.card', {}, h('table', {}, h('thead', {}, h('tr', {}, ['time', 'event', 'from', 'name', 'payload / fields'].map((c) => h('th', {}, c)))), body)));
  for await (const ev of stream('GET', '/v1/events/watch', { signal: ctx.signal })) {
    const user = ev.event === 'UserEventReceived';
    if (!user && !all.checked) continue;
    const { time, event, sender, name: n, payload: p, ...rest } = ev;
    body.prepend(h(user ? 'tr.user-event' : 'tr', {}, h('td', {}, new Date().toLocaleTimeString()),
      h('td', {}, event), h('td.mono', {}, sender ? sender.slice(0, 12) : ''), h('td', {}, n ?? ''),
      h('td.mono', {}, user ? p : JSON.stringify(rest))));
    while (body.children.length > MAX_ROWS) body.lastChild.remove();
  }
}
