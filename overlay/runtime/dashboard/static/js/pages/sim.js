// The simulation page: open the output folder of a `colony sim run` (its --out, a path
// on the daemon's host): run info, counters, distributions, the time series as SVG
// sparklines and the run's own PNG plots.

import { ApiError, call } from '../api.js';
import { clear, h, kv, sparkline, table } from '../ui.js';

const DIST_COLS = ['count', 'mean', 'p50', 'p90', 'p99', 'max'];

function fmt(v) {
  return typeof v === 'number' ? String(Math.round(v * 1000) / 1000) : String(v ?? '');
}

/** timeseries.csv: one sparkline per numeric column against t. */
function series(csv) {
  const [head, ...rows] = csv.trim().split('\n').map((l) => l.split(','));
  const cols = head.slice(1).map((name, i) => {
    const values = rows.map((r) => Number(r[i + 1]));
    return values.every(Number.isFinite) ? { name, values } : null;
  }).filter(Boolean);
  return h('div.spark', { id: 'sim-series' }, cols.flatMap((c) => [
    h('span.name', {}, c.name), h('span.mono', {}, fmt(c.values[c.values.length - 1])),
    sparkline(c.values)]));
}

export default async function sim(main, ctx, rest) {
  const input = h('input', { id: 'sim-dir', size: 70, placeholder: '/path/to/sim-out/<scenario> (on the daemon host)' });
  const out = h('div', { id: 'sim-run' });
  const go = h('button', { id: 'sim-open', type: 'button' }, 'open');
  main.append(h('h2', {}, 'Simulation run'),
    h('div.card', {}, h('div.row', {}, input, go),
      h('p.muted', {}, 'The folder `colony sim run … --out DIR` wrote (metrics.json, *.csv, *.png).')),
    out);
  const open = async (dir) => {
    clear(out, h('p.muted', {}, 'reading…'));
    let r;
    try {
      r = await call('GET', '/v1/dashboard/sim', { query: { dir }, signal: ctx.signal });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      clear(out, h('p.error', {}, e.message));
      return;
    }
    const m = r.metrics;
    const dists = Object.entries(m.distributions || {});
    const counters = Object.entries(m.counters || {});
    clear(out,
      h('div.grid', {},
        h('div.card', {}, h('h3', {}, 'Run'), kv(Object.entries(m.info || {}).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : fmt(v)]))),
        h('div.card', {}, h('h3', {}, 'Counters'), table(['counter', 'value'], counters.map(([k, v]) => [k, fmt(v)])))),
      h('div.card', {}, h('h3', {}, 'Distributions'),
        table(['name', ...DIST_COLS], dists.map(([k, d]) => [k, ...DIST_COLS.map((c) => fmt(d[c]))]))),
      h('div.card', {}, h('h3', {}, 'Time series (timeseries.csv)'), h('div', { id: 'sim-ts' },
        r.tables.includes('timeseries.csv') ? h('p.muted', {}, 'loading…') : h('p.muted', {}, 'no timeseries.csv'))),
      h('div.card', { id: 'sim-plots' }, h('h3', {}, `Plots (${r.plots.length})`),
        r.plots.length ? r.plots.map((name) => h('figure', {},
          h('img', { src: `/v1/dashboard/sim/file?${new URLSearchParams({ dir: r.dir, name })}`, alt: name, class: 'sim-plot' }),
          h('figcaption.muted', {}, name)))
          : h('p.muted', {}, 'none (run without --no-plots, with matplotlib installed)')));
    if (r.tables.includes('timeseries.csv')) {
      const csv = await call('GET', '/v1/dashboard/sim/file', { query: { dir: r.dir, name: 'timeseries.csv' }, signal: ctx.signal });
      clear(out.querySelector('#sim-ts'), series(csv));
    }
  };
  go.addEventListener('click', () => {
    location.hash = `#/sim/${encodeURIComponent(input.value.trim())}`;
  });
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') go.click(); });
  if (rest[0]) {
    input.value = rest[0];
    await open(rest[0]);
  }
}
