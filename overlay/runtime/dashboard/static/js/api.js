// Calls to the control API from the dashboard: the session cookie goes along by
// itself (same origin); calls that change state carry X-Colony-CSRF (sessions.py).
// Every failure becomes one of two errors the pages show as a sentence:
// ApiError (the daemon answered with its JSON error shape) or DaemonGone (nothing
// answered, or not within the timeout). Nothing here ever waits without a bound,
// except streams, which end when the daemon closes them or the page aborts them.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class DaemonGone extends Error {}

const CALL_TIMEOUT_MS = 15000;
const troubleHandlers = new Set();

/** Called with every ApiError 401 and DaemonGone (the app shows them globally). */
export function onTrouble(fn) { troubleHandlers.add(fn); }

function trouble(err) {
  for (const fn of troubleHandlers) fn(err);
  return err;
}

function url(path, query) {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

function init(method, body, signal) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['X-Colony-CSRF'] = '1';
    headers['Content-Type'] = 'application/json';
  }
  return { method, headers, signal, credentials: 'same-origin', cache: 'no-store',
           body: body === undefined ? undefined : JSON.stringify(body) };
}

async function errorOf(resp) {
  let code = 'http_' + resp.status;
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const j = await resp.json();
    if (j && j.error) { code = j.error.code; message = j.error.message; }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(resp.status, code, message);
}

async function send(method, path, { query, body, signal, timeoutMs }) {
  const signals = [AbortSignal.timeout(timeoutMs ?? CALL_TIMEOUT_MS)];
  if (signal) signals.push(signal);
  try {
    return await fetch(url(path, query), init(method, body, AbortSignal.any(signals)));
  } catch (e) {
    if (signal && signal.aborted) throw e;
    if (e.name === 'TimeoutError') {
      throw trouble(new DaemonGone(`the daemon did not answer ${method} ${path} within ` +
                                   `${(timeoutMs ?? CALL_TIMEOUT_MS) / 1000} s`));
    }
    throw trouble(new DaemonGone('the daemon is not answering: it stopped, or the ' +
                                 'network to it is down'));
  }
}

/** One JSON call. Resolves to the parsed body; rejects with ApiError or DaemonGone. */
export async function call(method, path, opts = {}) {
  const resp = await send(method, path, opts);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (err.status === 401) trouble(err);
    throw err;
  }
  const type = resp.headers.get('content-type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

/** An NDJSON stream (publish, fetch, capsule wait and logs, events): yields each
 *  object; an {error} line ends it with an ApiError. Abort with `signal`. */
export async function* stream(method, path, { query, body, signal } = {}) {
  let resp;
  try {
    resp = await fetch(url(path, query), init(method, body, signal));
  } catch (e) {
    if (signal && signal.aborted) return;
    throw trouble(new DaemonGone('the daemon is not answering: it stopped, or the ' +
                                 'network to it is down'));
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (err.status === 401) trouble(err);
    throw err;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      let part;
      try {
        part = await reader.read();
      } catch (e) {
        if (signal && signal.aborted) return;
        throw trouble(new DaemonGone('the daemon went away in the middle of a stream'));
      }
      if (part.done) break;
      buf += part.value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const item = JSON.parse(line);
        if (item.error && typeof item.error === 'object') {
          throw new ApiError(200, item.error.code, item.error.message);
        }
        if (item.error) throw new ApiError(200, 'failed', String(item.error));
        yield item;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Prometheus text: [{name, labels, value, type}] (comments give the types). */
export function parseMetrics(text) {
  const types = {};
  const out = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types[name] = type;
      continue;
    }
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const base = m[1].replace(/_(total|created|bucket|sum|count)$/, '');
    out.push({ name: m[1], key: m[1] + (m[2] || ''), labels: m[2] || '',
               value: Number(m[3]), type: types[m[1]] || types[base] || 'untyped' });
  }
  return out;
}
