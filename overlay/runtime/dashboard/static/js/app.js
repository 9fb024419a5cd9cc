// The dashboard shell: hash routes (#/colony, #/capsules/ID, …), one page mounted at a
// time (its streams and timers stop when it unmounts), and the global messages: a
// session that ended sends the browser to the login page with the reason; a daemon
// that stopped answering shows a banner, retried until it answers again.

import { ApiError, DaemonGone, call, onTrouble } from './api.js';
import { clear, h, short } from './ui.js';
import colony from './pages/colony.js';
import capsules from './pages/capsules.js';
import data from './pages/data.js';
import events from './pages/events.js';
import metrics from './pages/metrics.js';
import doctor from './pages/doctor.js';
import sim from './pages/sim.js';

const PAGES = { colony, capsules, data, events, metrics, doctor, sim };
const RETRY_MS = 3000;
const main = document.getElementById('main');
const banner = document.getElementById('banner');
let current = null; // { controller, timers }
let gone = null; // the retry timer while the daemon is away

function toLogin(reason) {
  location.assign('/dashboard/login.html#' + reason);
}

function showGone(err) {
  banner.hidden = false;
  banner.className = 'banner';
  banner.dataset.kind = 'gone';
  banner.textContent = `Daemon unreachable: ${err.message}. Retrying every ${RETRY_MS / 1000} s…`;
  if (gone) return;
  gone = setInterval(async () => {
    try {
      await call('GET', '/v1/id', { timeoutMs: 2500 });
      clearInterval(gone);
      gone = null;
      banner.hidden = true;
      delete banner.dataset.kind;
      route(); // remount: streams of the old page ended with the connection
    } catch (_) { /* still away: the banner stays */ }
  }, RETRY_MS);
}

onTrouble((err) => {
  if (err instanceof ApiError && err.status === 401) {
    toLogin(err.code === 'session_expired' ? 'expired' : 'unauthorized');
  } else if (err instanceof DaemonGone) {
    showGone(err);
  }
});

/** What a page gets: an abort signal for its streams, timers that stop with it, and
 *  a way to show an error where the page is. */
function context() {
  const controller = new AbortController();
  const timers = [];
  current = { controller, timers };
  return {
    signal: controller.signal,
    every(fn, ms) {
      let running = false;
      const tick = async () => {
        if (running || controller.signal.aborted) return;
        running = true;
        try { await fn(); } catch (e) { this.fail(e); } finally { running = false; }
      };
      timers.push(setInterval(tick, ms));
      return tick();
    },
    fail(e) {
      if (controller.signal.aborted || e.name === 'AbortError') return;
      if (e instanceof DaemonGone || (e instanceof ApiError && e.status === 401)) return; // global
      let box = main.querySelector('.page-error');
      if (!box) {
        box = h('p.error.page-error');
        main.prepend(box);
      }
      box.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e.message || e);
    },
  };
}

function unmount() {
  if (!current) return;
  current.controller.abort();
  current.timers.forEach(clearInterval);
  current = null;
}

function route() {
  unmount();
  const [name, ...rest] = (location.hash.replace(/^#\/?/, '') || 'colony').split('/');
  const page = PAGES[name] || colony;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === name);
  }
  clear(main);
  const ctx = context();
  Promise.resolve(page(main, ctx, rest.map(decodeURIComponent))).catch((e) => ctx.fail(e));
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await call('POST', '/dashboard/logout'); } catch (_) { /* leaving anyway */ }
  toLogin('logged-out');
});

window.addEventListener('hashchange', route);

(async () => {
  try {
    const me = await call('GET', '/v1/id');
    document.getElementById('whoami').textContent = short(me.id);
    document.getElementById('whoami').title = me.id;
    route();
  } catch (e) {
    if (!(e instanceof DaemonGone) && !(e instanceof ApiError && e.status === 401)) {
      clear(main, h('p.error', {}, String(e.message || e)));
    }
  }
})();
