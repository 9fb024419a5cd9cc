// The login page: trade the API token for a session cookie (HttpOnly: this script
// never sees it), then go to the dashboard. The token is posted once, never put in
// a URL or in storage.

const REASONS = {
  expired: 'Your session expired or the daemon restarted: log in again.',
  unauthorized: 'This page needs a login.',
  'logged-out': 'Logged out.',
};

const form = document.getElementById('login');
const msg = document.getElementById('msg');
const reason = document.getElementById('reason');
const why = location.hash.slice(1);
if (REASONS[why]) {
  reason.hidden = false;
  reason.className = why === 'logged-out' ? 'banner info' : 'banner';
  reason.textContent = REASONS[why];
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  msg.textContent = '';
  const token = document.getElementById('token').value.trim();
  let resp;
  try {
    resp = await fetch('/dashboard/login', {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', 'X-Colony-CSRF': '1' },
      body: JSON.stringify({ token }), signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    msg.textContent = 'The daemon is not answering: is `colony daemon` running on this address?';
    return;
  }
  if (resp.ok) {
    location.assign('/dashboard/#/colony');
    return;
  }
  let text = `${resp.status} ${resp.statusText}`;
  try { text = (await resp.json()).error.message; } catch (_) { /* keep the status */ }
  msg.textContent = resp.status === 401 ? `Wrong token: ${text}` : text;
});
