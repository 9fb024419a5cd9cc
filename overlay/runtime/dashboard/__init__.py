"""The web dashboard (docs/dashboard.md): pages served by the daemon on its control
API's port, a login that trades the API token for an HttpOnly session cookie, and
the few reads the pages need beyond the API (routes.py, sessions.py, static/)."""
