// The doctor page: the report `colony doctor` prints, from this daemon.

import { call } from '../api.js';
import { bytes, clear, h, kv, short, stateBadge, table } from '../ui.js';

export default async function doctor(main, ctx) {
  const box = h('div', { id: 'doctor' }, h('p.muted', {}, 'asking the daemon…'));
  const again = h('button', { type: 'button', id: 'doctor-again' }, 'run again');
  main.append(h('h2', {}, 'Doctor ', again), box);
  const run = async () => {
    const d = await call('GET', '/v1/doctor', { signal: ctx.signal, timeoutMs: 30000 });
    const peers = Object.entries((d.connections && d.connections.peers) || {});
    clear(box,
      h('div.card', {}, h('h3', {}, 'Checks'), table(['check', 'result', 'detail', 'advice'],
        d.checks.map((c) => [c.name, stateBadge(!c.checked ? 'not checked' : c.ok ? 'ok' : 'bad'), c.detail, c.advice || '']))),
      h('div.grid', {},
        h('div.card', {}, h('h3', {}, 'Node'), kv([
          ['id', h('span.mono', {}, d.id)], ['listen', (d.listen_addrs || []).join(' ')],
          ['reachability', d.reachability ? d.reachability.status : ''],
          ['members', Object.entries(d.members || {}).map(([k, v]) => `${v} ${k}`).join(', ')],
          ['store', d.store ? `${d.store.blocks} blocks, ${bytes(d.store.bytes)} (map ${bytes(d.store.map_size)})` : ''],
        ])),
        h('div.card', {}, h('h3', {}, 'Connections'), table(['peer', 'path', 'via', 'remote'],
          peers.map(([p, c]) => [h('span.mono', { title: p }, short(p)), c.kind, short(c.via), c.remote || ''])))),
      h('details', {}, h('summary', {}, 'raw report (JSON)'), h('pre', {}, JSON.stringify(d, null, 2))));
  };
  again.addEventListener('click', () => run().catch((e) => ctx.fail(e)));
  await run();
}
