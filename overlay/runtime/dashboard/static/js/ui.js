// Small DOM helpers: build elements without innerHTML (no injected markup from data).

const SVG_NS = 'http://www.w3.org/2000/svg';

/** h('div.card', {onclick}, child, …): an element; strings become text nodes. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const short = (id) => (id && id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id || '');

export function stateBadge(state) {
  return h('span.state.' + String(state || 'unknown').replace(/[^a-z]/g, ''), {}, state || '?');
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : '';
}

/** A <table> from column titles and rows of cells. */
export function table(cols, rows, onRow) {
  return h('table', {},
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((r, i) => h(onRow ? 'tr.click' : 'tr',
      onRow ? { onclick: () => onRow(i) } : {}, r.map((c) => h('td', {}, c))))));
}

/** A definition list from [key, value] pairs. */
export function kv(pairs) {
  return h('dl.kv', {}, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '')]));
}

/** An SVG sparkline of numbers (the newest last). */
export function sparkline(values, width = 320, height = 36) {
  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'plot' });
  if (values.length < 2) return svg;
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const span = hi - lo || 1;
  const pts = values.map((v, i) => {
    const x = (i / (values.length - 1)) * (width - 4) + 2;
    const y = height - 3 - ((v - lo) / span) * (height - 6);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: '#2563eb',
                             'stroke-width': 1.5 }));
  return svg;
}
