// The data page: this node's pins, a DAG browser by path (CID/a/b) over the blocks
// this node holds, and a fetch of a DAG from the colony with live progress.

import { ApiError, call, stream } from '../api.js';
import { bytes, clear, h, short, table } from '../ui.js';

function browser(ctx) {
  const input = h('input', { id: 'dag-path', size: 70, placeholder: 'CID or CID/dir/file' });
  const where = h('div.row', { id: 'dag-crumbs' });
  const out = h('div', { id: 'dag-view' });
  const open = async (path) => {
    input.value = path;
    clear(out, h('p.muted', {}, 'reading…'));
    let r;
    try {
      r = await call('GET', '/v1/dashboard/ls', { query: { path }, signal: ctx.signal });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      clear(out, h('p.error', {}, e.message));
      return;
    }
    const parts = r.path.split('/');
    clear(where, parts.map((p, i) => h('a', { href: '#/data', onclick: (ev) => { ev.preventDefault(); open(parts.slice(0, i + 1).join('/')).catch((x) => ctx.fail(x)); } },
      i ? p : short(p))).flatMap((a, i) => (i ? [' / ', a] : [a])));
    if (r.entries) {
      clear(out, h('p.muted', {}, `directory ${r.cid}, ${r.entries.length}` +
                   `${r.truncated ? ' (first)' : ''} entries`),
        table(['name', 'type', 'size', 'cid'], r.entries.map((e) => [
          h('a.entry', { href: '#/data', onclick: (ev) => { ev.preventDefault(); open(`${r.path}/${e.name}`).catch((x) => ctx.fail(x)); } },
            e.name + (e.type === 'directory' ? '/' : '')),
          e.type, bytes(e.size), h('span.mono', {}, short(e.cid))])));
    } else {
      clear(out, h('p.muted', {}, `${r.type} ${r.cid}, ${bytes(r.size)}` +
                   (r.size > (r.preview || '').length ? ' (first 16 KiB shown)' : '')),
            h('pre', { id: 'dag-preview' }, r.preview ?? ''));
    }
  };
  const go = h('button', { id: 'dag-open', type: 'button', onclick: () => open(input.value.trim()).catch((e) => ctx.fail(e)) }, 'open');
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') go.click(); });
  return { card: h('div.card', {}, h('h3', {}, 'Browse a DAG by path'), h('div.row', {}, input, go), where, out), open };
}

function fetcher(ctx, afterFetch) {
  const input = h('input', { id: 'fetch-cid', size: 70, placeholder: 'CID to fetch from the colony' });
  const bar = h('progress', { id: 'fetch-progress', max: 1, value: 0 });
  const text = h('span.muted', { id: 'fetch-text' });
  const run = async () => {
    const cid = input.value.trim();
    text.textContent = 'finding providers…';
    try {
      for await (const p of stream('POST', '/v1/fetch', { body: { cid }, signal: ctx.signal })) {
        if (p.phase === 'providers') { text.textContent = `${p.providers.length} provider(s)`; continue; }
        const done = (p.blocks_fetched || 0) + (p.blocks_local || 0);
        const total = done + (p.outstanding || 0); // grows as the walk finds links
        if (total) { bar.max = total; bar.value = done; }
        text.textContent = `${p.blocks_fetched ?? 0} fetched, ${p.blocks_local ?? 0} local, ` +
          `${bytes(p.bytes_fetched ?? 0)}, ${bytes(p.rate_bps ?? 0)}/s${p.done ? ' — done' : ''}`;
        if (p.done) { bar.max = 1; bar.value = 1; afterFetch(cid); }
      }
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      text.textContent = e.message;
      text.className = 'error';
    }
  };
  const provs = h('div', { id: 'providers' });
  const findProviders = async () => {
    const cid = input.value.trim();
    clear(provs, h('p.muted', {}, 'asking the DHT…'));
    try {
      const r = await call('POST', '/v1/dht/findprovs', { body: { cid }, signal: ctx.signal, timeoutMs: 60000 });
      clear(provs, h('p.muted', {}, `${r.providers.length} provider(s) in ${r.hops} hop(s)${r.error ? '; ' + r.error : ''}`),
        r.providers.length ? table(['provider', 'addresses'], r.providers.map((p) => [
          h('span.mono', { title: p.id || p }, short(p.id || p)), (p.addrs || []).join(' ')])) : '');
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      clear(provs, h('p.error', {}, e.message));
    }
  };
  return h('div.card', {}, h('h3', {}, 'Fetch a DAG from the colony'),
    h('div.row', {}, input, h('button', { id: 'fetch-go', type: 'button', onclick: () => run().catch((e) => ctx.fail(e)) }, 'fetch'),
      h('button', { id: 'find-providers', type: 'button', onclick: () => findProviders().catch((e) => ctx.fail(e)) }, 'find providers')),
    h('div.row', {}, bar, text), provs);
}

export default async function data(main, ctx) {
  const pins = h('div', { id: 'pins' }, h('p.muted', {}, 'loading…'));
  const b = browser(ctx);
  main.append(h('h2', {}, 'Data'), b.card, fetcher(ctx, (cid) => b.open(cid)),
              h('div.card', {}, h('h3', {}, 'Pins on this node'), pins));
  const rows = await call('GET', '/v1/dashboard/pins', { signal: ctx.signal });
  clear(pins, rows.length ? table(['cid', 'type', 'names'], rows.map((p) => [
    h('span.mono', {}, p.cid), p.type, p.names.join(', ')]), (i) => b.open(rows[i].cid))
    : h('p.muted', {}, 'no pins'));
}
