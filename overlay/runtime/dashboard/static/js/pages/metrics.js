// The metrics page: the node's Prometheus series (/metrics), sampled every few
// seconds while the page is open, each drawn as an SVG sparkline (counters as a
// rate per second). The history lives in this page only.

import { call, parseMetrics } from '../api.js';
import { clear, h, sparkline } from '../ui.js';

const EVERY_MS = 2000;
const KEEP = 90;
const MAX_SHOWN = 60;

export default async function metrics(main, ctx) {
  const filter = h('input', { id: 'metric-filter', placeholder: 'filter series…', size: 40, value: 'colony_' });
  const zeros = h('input', { type: 'checkbox', id: 'metric-zeros' });
  const box = h('div.spark', { id: 'metric-list' });
  main.append(h('h2', {}, 'Metrics'),
    h('div.row', {}, filter, h('label', {}, zeros, ' show series that stayed 0'),
      h('span.muted', {}, `sampled every ${EVERY_MS / 1000} s; counters shown as rate/s`)),
    h('div.card', {}, box));
  const hist = new Map(); // key -> {type, samples: [[t, v]]}
  const draw = () => {
    const f = filter.value.trim();
    const keys = [...hist.keys()].filter((k) => (!f || k.includes(f)) &&
      (zeros.checked || hist.get(k).samples.some(([, v]) => v !== 0))).sort().slice(0, MAX_SHOWN);
    clear(box, keys.flatMap((k) => {
      const { type, samples } = hist.get(k);
      let values = samples.map(([, v]) => v);
      let last = values[values.length - 1];
      if (type === 'counter') {
        values = samples.slice(1).map(([t, v], i) => (v - samples[i][1]) / ((t - samples[i][0]) / 1000));
        last = values.length ? `${values[values.length - 1].toFixed(2)}/s` : '…';
      }
      return [h('span.name', {}, k), h('span.mono', {}, String(last)), sparkline(values)];
    }));
    box.dataset.series = String(keys.length);
  };
  filter.addEventListener('input', draw);
  zeros.addEventListener('change', draw);
  await ctx.every(async () => {
    const text = await call('GET', '/metrics', { signal: ctx.signal });
    const t = performance.now();
    for (const m of parseMetrics(text)) {
      if (!Number.isFinite(m.value)) continue;
      const e = hist.get(m.key) || { type: m.type, samples: [] };
      e.samples.push([t, m.value]);
      if (e.samples.length > KEEP) e.samples.shift();
      hist.set(m.key, e);
    }
    draw();
  }, EVERY_MS);
}
