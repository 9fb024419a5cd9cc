// The capsules page: the live list (ps, refreshed), filters, a spec form that submits
// through this node; and one capsule: spec, custody, the lease history this page saw
// (from the wait stream), receipt and its log following live.

import { ApiError, call, stream } from '../api.js';
import { clear, h, kv, short, stateBadge, table, when } from '../ui.js';

// ps asks the custodians of unfinished capsules submitted here: poll gently
const LIST_MS = 3000;
const STATES = ['', 'submitted', 'leased', 'running', 'succeeded', 'failed', 'cancelled', 'rejected'];
const EXAMPLE = JSON.stringify({ name: 'hello', command: ['sh', '-c', 'echo hello from $(hostname)'] }, null, 2);

function submitForm(ctx) {
  const spec = h('textarea', { id: 'spec', rows: 6, spellcheck: 'false' });
  spec.value = EXAMPLE;
  const out = h('p', { id: 'submit-result' });
  const submit = async () => {
    out.className = '';
    out.textContent = 'submitting…';
    let parsed;
    try { parsed = JSON.parse(spec.value); } catch (e) {
      out.className = 'error';
      out.textContent = `the spec is not JSON: ${e.message}`;
      return;
    }
    try {
      const r = await call('POST', '/v1/capsules/submit', { body: { spec: parsed }, signal: ctx.signal });
      out.textContent = '';
      out.append('submitted ', h('a', { href: `#/capsules/${r.id}`, id: 'submitted-link' }, r.id),
                 ` (${r.state}${r.placement ? '; ' + r.placement : ''})`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      out.className = 'error';
      out.textContent = e.message;
    }
  };
  return h('div.card', {},
    h('h3', {}, 'Submit a capsule spec (JSON; docs/capsules.md)'), spec,
    h('div.row', {}, h('button.primary', { id: 'submit', type: 'button', onclick: () => submit().catch((e) => ctx.fail(e)) }, 'submit')),
    out);
}

async function list(main, ctx) {
  const state = h('select', { id: 'filter-state' }, STATES.map((s) => h('option', { value: s }, s || 'any state')));
  const text = h('input', { id: 'filter-text', placeholder: 'name or id contains…' });
  const box = h('div', { id: 'capsule-list' }, h('p.muted', {}, 'loading…'));
  main.append(h('h2', {}, 'Capsules'), submitForm(ctx),
              h('div.row', {}, state, text), h('div.card', {}, box));
  let rows = [];
  const draw = () => {
    const t = text.value.trim().toLowerCase();
    const shown = rows.filter((r) => (!state.value || r.state === state.value) &&
      (!t || String(r.name || '').toLowerCase().includes(t) || r.id.includes(t))).reverse();
    if (!shown.length) {
      clear(box, h('p.muted', {}, rows.length ? 'no capsule matches' : 'no capsules yet'));
      return;
    }
    clear(box, table(['id', 'name', 'state', 'executor', 'exit', 'submitted', 'role'],
      shown.map((r) => [h('span.mono', { title: r.id }, short(r.id)), r.name || '',
                        stateBadge(r.state), short(r.executor), r.exit_status ?? '',
                        when(r.submitted_at), r.role || '']),
      (i) => { location.hash = `#/capsules/${shown[i].id}`; }));
  };
  state.addEventListener('change', draw);
  text.addEventListener('input', draw);
  await ctx.every(async () => {
    rows = await call('GET', '/v1/capsules', { signal: ctx.signal });
    draw();
  }, LIST_MS);
}

function specPairs(r) {
  const c = r.conditions || {};
  return [
    ['name', r.name], ['command', (r.command || []).join(' ')], ['function', r.function],
    ['inputs', (r.inputs || []).join(', ')], ['declared outputs', (r.declared_outputs || []).join(', ')],
    ['depends on (workflow parents)', h('span.mono', {}, (r.dependencies || []).join(', '))],
    ['conditions', `cpu ${c.cpu ?? 0}, mem ${c.mem_mib ?? 0} MiB, gpu ${c.gpu ?? 0}` +
      `${c.executor ? ', executor ' + c.executor : ''}` +
      `${c.labels && Object.keys(c.labels).length ? ', labels ' + JSON.stringify(c.labels) : ''}`],
    ['priority / retries', `${r.priority ?? ''} / ${r.maxretries ?? ''}`],
    ['submitter', h('span.mono', {}, r.submitter)], ['submitted', when(r.submitted_at)],
  ];
}

function custodyPairs(r) {
  return [
    ['state', stateBadge(r.state)], ['reason', r.reason || ''], ['placement', r.placement || ''],
    ['origin', h('span.mono', {}, r.origin)],
    ['epoch', r.epoch], ['custodians (leader first)',
      h('span.mono', {}, (r.custodians || []).map(short).join(', '))],
    ['version / lease token', `${r.version} / ${r.token}`], ['attempts', r.attempts],
    ['executor', h('span.mono', {}, r.executor || '')],
    ['excluded executors', (r.excluded || []).map(short).join(', ')],
  ];
}

function receiptPairs(r) {
  if (r.exit_status === null && !r.finished) return [['receipt', 'none yet']];
  return [
    ['exit status', r.exit_status], ['executor', h('span.mono', {}, r.receipt_executor || '')],
    ['started', when(r.started)], ['finished', when(r.finished)],
    ['outputs', (r.outputs || []).join(', ')], ['log CID', h('span.mono', {}, r.log_cid || '')],
  ];
}

async function one(main, ctx, id) {
  const head = h('h2', {}, 'Capsule ', h('span.mono', {}, short(id)), ' ', h('span', { id: 'capsule-state' }));
  const spec = h('div.card', {}, h('h3', {}, 'Spec'));
  const custody = h('div.card', {}, h('h3', {}, 'Custody'));
  const receipt = h('div.card', {}, h('h3', {}, 'Receipt'));
  const history = h('tbody', { id: 'lease-history' });
  const log = h('pre', { id: 'capsule-log' });
  const logState = h('span.muted', { id: 'log-state' }, 'following…');
  main.append(h('p', {}, h('a', { href: '#/capsules' }, '← all capsules')), head,
    h('div.grid', {}, spec, custody, receipt,
      h('div.card', {}, h('h3', {}, 'Lease history (as this page saw it)'),
        h('table', {}, h('thead', {}, h('tr', {}, ['time', 'state', 'lease token', 'executor', 'reason'].map((c) => h('th', {}, c)))), history))),
    h('div.card', {}, h('h3', {}, 'Log ', logState), log));
  const show = (r) => {
    clear(head.querySelector('#capsule-state'), stateBadge(r.state));
    clear(spec, h('h3', {}, 'Spec'), kv(specPairs(r)));
    clear(custody, h('h3', {}, 'Custody'), kv(custodyPairs(r)));
    clear(receipt, h('h3', {}, 'Receipt'), kv(receiptPairs(r)));
  };
  let last = '';
  const note = (r) => {
    const key = `${r.state}/${r.token}/${r.executor}`;
    if (key === last) return;
    last = key;
    history.append(h('tr', {}, h('td', {}, new Date().toLocaleTimeString()), h('td', {}, stateBadge(r.state)),
      h('td', {}, r.token), h('td.mono', {}, short(r.executor)), h('td', {}, r.reason || '')));
  };
  const first = await call('GET', '/v1/capsules/get', { query: { id }, signal: ctx.signal });
  show(first);
  note(first);
  const follow = async () => {
    for await (const r of stream('GET', '/v1/capsules/wait', { query: { id }, signal: ctx.signal })) {
      note(r);
      // the stream's rows lack the placement hint of get: ask once more when it ends
      show(r.done ? await call('GET', '/v1/capsules/get', { query: { id }, signal: ctx.signal }) : r);
    }
  };
  const logs = async () => {
    for await (const item of stream('GET', '/v1/capsules/logs', { query: { id, follow: '1' }, signal: ctx.signal })) {
      if (item.data) log.append(item.data);
      if (item.attempt !== undefined) log.append(`\n--- attempt ${item.attempt} on ${short(item.executor)} ---\n`);
      if (item.done) {
        logState.textContent = `ended: ${item.state}${item.exit_status !== null && item.exit_status !== undefined ? ', exit ' + item.exit_status : ''}`;
        log.dataset.done = '1';
      }
    }
  };
  await Promise.all([follow().catch((e) => ctx.fail(e)), logs().catch((e) => ctx.fail(e))]);
}

export default function capsules(main, ctx, rest) {
  return rest[0] ? one(main, ctx, rest[0]) : list(main, ctx);
}
