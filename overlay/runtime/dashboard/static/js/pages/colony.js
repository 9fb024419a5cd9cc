// The colony page: every member this node's gossip view holds, with state, RTT,
// reachability and how this node reaches it (doctor's connection paths), the
// resources it advertises, and its Vivaldi network coordinate on a 2-D plot.

import { call } from '../api.js';
import { bytes, clear, h, s, short, stateBadge, table } from '../ui.js';

const REFRESH_MS = 2000;
const PATHS_MS = 10000;
const PLOT_W = 520;
const PLOT_H = 360;
const STATE_COLOUR = { alive: '#15803d', suspect: '#b45309', dead: '#b91c1c', left: '#6b7280' };

function labels(ad) {
  return ad ? Object.entries(ad.labels || {}).map(([k, v]) => `${k}=${v}`).join(' ') : '';
}

function memberRows(members, paths) {
  return members.map((m) => [
    h('span.mono', { title: m.id }, short(m.id), m.self ? ' (this node)' : ''),
    stateBadge(m.state),
    m.rtt_ms === null ? '' : `${m.rtt_ms.toFixed(1)} ms`,
    m.ad ? m.ad.reachability : '',
    m.self ? 'self' : (paths[m.id] ? paths[m.id].kind + (paths[m.id].via ? ` via ${short(paths[m.id].via)}` : '') : 'not connected'),
    m.ad ? `${m.ad.cpu_cores} cores, load ${Number(m.ad.cpu_load).toFixed(2)}` : '',
    m.ad ? bytes(m.ad.mem_free_bytes) : '',
    m.ad ? (m.ad.executors || []).join(', ') : '',
    labels(m.ad),
  ]);
}

/** Members on the first two dimensions of their coordinates (ms), scaled to fit. */
function plot(members) {
  const pts = members.filter((m) => m.coord && m.coord.vec.length >= 2);
  const svg = s('svg', { class: 'plot', id: 'coord-plot', width: '100%',
                         viewBox: `0 0 ${PLOT_W} ${PLOT_H}` });
  if (!pts.length) {
    svg.append(s('text', { x: 20, y: 30, class: 'pt-label' }, 'no coordinates yet'));
    return svg;
  }
  const xs = pts.map((m) => m.coord.vec[0]);
  const ys = pts.map((m) => m.coord.vec[1]);
  const pad = 40;
  const span = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys), 0.5);
  const sx = (x) => pad + ((x - Math.min(...xs)) / span) * (PLOT_W - 2 * pad);
  const sy = (y) => PLOT_H - pad - ((y - Math.min(...ys)) / span) * (PLOT_H - 2 * pad);
  svg.append(s('text', { x: 8, y: PLOT_H - 8, class: 'pt-label' },
               `Vivaldi coordinates, dims 1–2; scale: ${span.toFixed(2)} ms across`));
  for (const m of pts) {
    const x = sx(m.coord.vec[0]);
    const y = sy(m.coord.vec[1]);
    const dot = s('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: m.self ? 7 : 5,
                              fill: STATE_COLOUR[m.state] || '#64748b',
                              stroke: m.self ? '#1d2330' : 'none', 'stroke-width': 2,
                              'data-id': m.id });
    dot.append(s('title', {}, `${m.id}\n${m.state}, height ${m.coord.height_ms} ms, ` +
                             `error ${m.coord.error}`));
    const left = x > PLOT_W / 2; // labels inward, never clipped at the edge
    svg.append(dot, s('text', { x: (left ? x - 8 : x + 8).toFixed(1), y: (y + 4).toFixed(1),
                                'text-anchor': left ? 'end' : 'start', class: 'pt-label' },
                      m.id.slice(-6)));
  }
  return svg;
}

export default async function colony(main, ctx) {
  const showGone = h('input', { type: 'checkbox', id: 'show-gone' });
  const count = h('span.muted', { id: 'member-count' });
  const list = h('div', { id: 'members' }, h('p.muted', {}, 'loading members…'));
  const map = h('div', { id: 'map' });
  main.append(
    h('h2', {}, 'Colony members ', count),
    h('div.row', {}, h('label', {}, showGone, ' include dead and left members')),
    h('div.grid.members', {}, h('div.card', {}, list), h('div.card', {}, h('h3', {}, 'Network coordinates'), map)),
  );
  let paths = {};
  const refreshPaths = async () => {
    const doc = await call('GET', '/v1/doctor', { signal: ctx.signal });
    paths = (doc.connections && doc.connections.peers) || {};
  };
  const refresh = async () => {
    const members = await call('GET', '/v1/members', { query: { all: showGone.checked ? '1' : '0' },
                                                       signal: ctx.signal });
    members.sort((a, b) => (b.self - a.self) || a.id.localeCompare(b.id));
    const alive = members.filter((m) => m.state === 'alive').length;
    count.textContent = `(${alive} alive of ${members.length})`;
    clear(list, table(['member', 'state', 'RTT', 'reachability', 'path', 'cpu', 'mem free',
                       'executors', 'labels'], memberRows(members, paths)));
    list.dataset.loaded = String(members.length);
    clear(map, plot(members));
    if (!performance.getEntriesByName('colony-data').length) performance.mark('colony-data');
  };
  showGone.addEventListener('change', () => refresh().catch((e) => ctx.fail(e)));
  ctx.every(refreshPaths, PATHS_MS).then(() => refresh()).catch((e) => ctx.fail(e));
  await ctx.every(refresh, REFRESH_MS);
}
